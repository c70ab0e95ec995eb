"""Per-tag worker pools on top of :class:`distributed.deploy.SpecCluster`.

A worker of tag ``T`` is a ``worker_spec`` entry named ``T-<n>`` whose options carry ``tag=T``;
the worker offers the Dask resource ``T=1``, so ``ScalableClient.submit(..., tag=T)`` runs only
there. :class:`TaggedCluster` is a mixin: :class:`scalable.slurm.SlurmCluster` and
:class:`scalable.local.LocalCluster` combine it with their SpecCluster base and supply
``_worker_spec(tag, name)``, ``_jobs_async()`` and the class attributes below.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
import warnings

from distributed.core import Status
from distributed.deploy.cluster import Cluster

from . import config
from .adapt import AdaptiveTags
from .backend import PoolBackend
from .containers import (
    ContainerError,
    ContainerSpec,
    check_tag,
    container_preset,
    make_spec,
)
from .exposure import ExposedCluster
from .pool import TagPool, tag_of, whole
from .recovery import Watcher
from .runtimes import get_runtime
from .tag_options import tag_options

logger = logging.getLogger(__name__)


class UnknownTagError(KeyError, ValueError):
    """A tag that was never given to ``add_container``."""

    def __str__(self):  # KeyError would print the message with quotes around it
        return str(self.args[0])


def _tag_first(method, tag, n):
    """Refuse the old ``(n, tag)`` order with the keyword form: the tag comes first, as in
    the original scalable (``add_workers("gcam", 4)``)."""
    if isinstance(tag, int) and not isinstance(tag, bool):
        called = f"{tag!r}, {n!r}" if isinstance(n, str) else f"{tag!r}"
        fix = f"tag={n!r}, n={tag!r}" if isinstance(n, str) else f"n={tag!r}"
        raise TypeError(
            f"{method} takes the tag first, as the original scalable did: {method}({called}) "
            f"reads {tag!r} as the tag; write cluster.{method}({fix})."
        )


class TaggedCluster(ExposedCluster, AdaptiveTags, PoolBackend):
    """Mixin giving a SpecCluster per-tag containers and worker pools (one
    :class:`~scalable.pool.TagPool` per tag, in ``cluster.pools``)."""

    kind = "cluster"
    #: whether add_container takes per-tag job options (queue=, walltime=, gpus=, ...)
    job_options = False
    #: whether each worker runs under a nanny unless its tag says otherwise
    nanny = True

    # -- set-up ---------------------------------------------------------------------------
    def _init_tags(self, work_dir=None, runtime=None):
        self.work_dir = os.path.abspath(
            os.path.expanduser(config.get("work-directory", work_dir) or os.getcwd())
        )
        if not os.path.isdir(self.work_dir):
            raise ValueError(
                f"work_dir {self.work_dir!r} is not a directory: create it or pass "
                f"work_dir='/path/to/your/work/dir'."
            )
        self.runtime = get_runtime(
            config.get("container.runtime", runtime), config.get("container.exec-args") or ()
        )
        self.pools: dict[str, TagPool] = {}
        self.cluster_id = uuid.uuid4().hex[:10]
        self.last_error: str | None = None
        self._watcher = Watcher(self)
        self._add_predefined_containers()

    def _default_name(self) -> str:
        """A short name for the sidebar and panel: the kind and the cluster id's start."""
        return f"{self.kind}-{self.cluster_id[:4]}"

    def _add_predefined_containers(self):
        """Containers listed under ``scalable.containers`` whose image exists are added."""
        for tag in config.get("containers", default={}) or {}:
            try:
                self.add_container(tag)
            except ContainerError as e:
                logger.info("predefined container %s skipped: %s", tag, e)

    # -- containers -------------------------------------------------------------------------
    def add_container(
        self,
        tag,
        dirs=None,
        path=None,
        cpus=None,
        memory=None,
        preload_script=None,
        *,
        env=None,
        nanny=None,
        queue=None,
        account=None,
        walltime=None,
        gpus=None,
        job_extra_directives=None,
        job_script_prologue=None,
    ):
        """Declare the container a tag's workers run in.

        The positional order is the original scalable's: ``add_container("gcam", {"/rcfs":
        "/rcfs"}, path, cpus, memory, preload_script)``.

        Parameters
        ----------
        tag : str
            Name of the pool, also the Dask resource tasks ask for (``submit(..., tag=tag)``).
            Case-insensitive: ``"GCAM"`` and ``"gcam"`` are one tag (kept lower-case).
        dirs : dict, optional
            Host path -> container path bind mounts, e.g. ``{"/rcfs": "/rcfs"}``.
        path : str, optional
            The image; default ``<work_dir>/containers/<tag>_container.sif``.
        cpus : int, optional
            CPUs per worker (Slurm ``--cpus-per-task``; the worker's threads). Default 1, or
            the ``scalable.containers.<tag>`` config, or the cluster's ``cpus=``.
        memory : str, optional
            Memory per worker, Slurm style (``"20G"``). Default ``"1G"`` (same fallbacks).
        preload_script : str, optional
            A Python file (relative to the work directory) or module run by each of this
            tag's workers as a Dask preload (``dask worker --preload``) before it starts.
        env : dict, optional
            Environment variables set inside the container.
        nanny : bool, optional
            Whether this tag's workers run under a nanny (default: the cluster's ``nanny``).
            ``nanny=False`` starts each worker as one process, without the nanny's own.
        queue, account, walltime : str, optional
            This tag's own partition, account and walltime (Slurm), overriding the
            cluster's; its workers' ``--lifetime`` and rollover follow its walltime.
        gpus : int, optional
            GPUs per worker: ``--gpus=N`` (``scalable.slurm.gpu-directive`` may say
            ``--gres=gpu:{n}`` instead).
        job_extra_directives, job_script_prologue : list of str, optional
            Added to the cluster's ``#SBATCH`` options and prologue lines for this tag.

        The same keys may be given under ``scalable.containers.<tag>`` in the config.

        Returns
        -------
        ContainerSpec

        Examples
        --------
        >>> cluster.add_container(tag="gcam", cpus=10, memory="20G",
        ...                       dirs={"/qfs/people/user/work/gcam-core": "/gcam-core"})  # doctest: +SKIP
        """
        if isinstance(dirs, (int, float)) and not isinstance(dirs, bool):
            raise TypeError(
                f"add_container takes dirs second, as the original scalable did: write the "
                f"sizes by keyword, e.g. cluster.add_container({tag!r}, cpus={dirs!r}"
                + (f", memory={path!r}" if isinstance(path, str) else "")
                + ")."
            )
        nanny = self._check_nanny(nanny)
        given = {
            "queue": queue,
            "account": account,
            "walltime": walltime,
            "gpus": gpus,
            "job_extra_directives": job_extra_directives,
            "job_script_prologue": job_script_prologue,
        }
        options = tag_options(check_tag(tag), given, container_preset(tag), self.job_options)
        spec = make_spec(
            tag,
            cpus,
            memory,
            dirs,
            path,
            env,
            preload_script,
            work_dir=self.work_dir,
            runtime=self.runtime,
            require_image=self.require_image,
            prologue=self._has_job_prologue() or bool(options.get("job_script_prologue")),
            defaults=self._container_defaults(),
        )
        self._prepare_container(spec)
        if spec.tag in self.pools:
            pool = self.pools[spec.tag]  # workers started from now on use the new spec
            pool.spec, pool.options = spec, options
        else:
            pool = self.pools[spec.tag] = TagPool(spec.tag, spec, self, options)
        pool.nanny = nanny
        self._registry_update()
        return spec

    @property
    def containers(self) -> dict[str, ContainerSpec]:
        """Container spec per tag (``{"gcam": ContainerSpec(...)}``)."""
        return {tag: pool.spec for tag, pool in self.pools.items()}

    def _container_defaults(self) -> dict:
        """Cluster-wide defaults for containers that do not give their own (cpus, memory)."""
        return {}

    def _prepare_container(self, spec):
        """Backend checks of a new container spec (raise ContainerError to refuse it)."""

    def _check_nanny(self, nanny, name="nanny"):
        if nanny is not None and not isinstance(nanny, bool):
            raise ValueError(f"{name}={nanny!r} must be True or False.")
        if nanny is False and self.workers_per_spec > 1:
            # dask worker starts several workers in one job only through their nannies
            raise ValueError(
                f"{name}=False starts one worker per job, but this cluster packs "
                f"workers_per_job={self.workers_per_spec}: keep the nanny or use a cluster "
                f"with workers_per_job=1."
            )
        return nanny

    def _nanny_of(self, tag) -> bool:
        """Whether ``tag``'s workers run under a nanny: the tag's choice, else the cluster's."""
        pool = self.pools.get(tag)
        return self.nanny if pool is None or pool.nanny is None else pool.nanny

    def _check_tag(self, tag) -> str:
        if tag is None:
            if len(self.containers) == 1:
                return next(iter(self.containers))
            raise UnknownTagError(
                f"say which tag: this cluster has {self._known_tags()}; e.g. tag="
                f"{next(iter(self.containers), 'gcam')!r}."
            )
        if isinstance(tag, str):
            tag = tag.lower()  # tags are case-insensitive, as in the original scalable
        if tag not in self.containers:
            check_tag(tag)
            raise UnknownTagError(
                f"tag {tag!r} was never added to this cluster (it has {self._known_tags()}): "
                f"call cluster.add_container(tag={tag!r}, ...) first."
            )
        return tag

    def _known_tags(self) -> str:
        return ", ".join(repr(t) for t in self.containers) or "no containers yet"

    # -- worker pools -----------------------------------------------------------------------
    tag_of = staticmethod(tag_of)

    def pool(self, tag=None) -> TagPool:
        """The :class:`~scalable.pool.TagPool` of ``tag`` (optional when there is only one)."""
        return self.pools[self._check_tag(tag)]

    @property
    def targets(self) -> dict:
        """Requested workers per tag (``{"gcam": 3}``), replacements on their way included."""
        return {tag: pool.target for tag, pool in self.pools.items()}

    @property
    def tag_errors(self) -> dict:
        """Tags whose workers kept failing to start, with the reason (see ``recovery``)."""
        return {tag: pool.error for tag, pool in self.pools.items() if pool.error}

    def add_workers(self, tag=None, n=0, wait=True):
        """Start ``n`` more workers of ``tag``.

        Submission failures (an invalid partition, too much memory, ...) raise here with
        Slurm's message, and the failed workers are forgotten, so nothing is left half-done.
        Asking for workers by hand turns the tag's adapt off.

        Parameters
        ----------
        tag : str
            A tag given to :meth:`add_container` (optional when there is only one).
        n : int
            How many workers to add.
        wait : bool
            Wait until the jobs are submitted (default). ``wait=False`` returns at once and
            lets quick successive calls share one submission; errors then land in
            ``cluster.last_error``.

        Returns
        -------
        list of str
            The new worker names, ``<tag>-<number>``.

        Examples
        --------
        >>> cluster.add_workers("gcam", 3)  # doctest: +SKIP
        ['gcam-0', 'gcam-1', 'gcam-2']
        """
        _tag_first("add_workers", tag, n)
        pool = self.pool(tag)
        n = whole(n, "n=2")
        if not n:
            return []
        return pool.scale_to(pool.target + n, wait=wait)

    add_worker = add_workers  # the spelling of the original README

    async def _start_new(self, names, raise_errors=False):
        error = None
        if self.status not in (Status.running, Status.starting, Status.created):
            for name in names:
                self.worker_spec.pop(name, None)
            return []
        if self.start_delay:
            # let every add_workers call of this burst add its specs first: one state
            # correction then starts them all, so they share one submission
            await asyncio.sleep(self.start_delay)
        try:
            await self._correct_state()
        except Exception as exc:
            error = exc
        # a failed start, ours or one sharing this run, leaves nothing behind
        failed = {}
        for name, worker in list(self.workers.items()):
            why = getattr(worker, "start_error", None)
            if why is not None or worker.status == Status.failed:
                failed[name] = why or error
                self.worker_spec.pop(name, None)
                self.workers.pop(name, None)
                worker.status = Status.failed  # it never ran: nothing to close later
        mine = [failed[n] for n in names if n in failed]
        if mine or (error is not None and not failed):
            error = next((e for e in mine if e is not None), error)
            for name in names:
                if name not in self.workers:
                    self.worker_spec.pop(name, None)
            self.last_error = str(error)
            if raise_errors:
                raise error from None
            logger.error("could not start workers %s: %s", names, error)
        return names

    def remove_workers(self, tag=None, n=0, force=False):
        """Stop ``n`` workers of ``tag``: jobs not started yet first, then idle workers,
        then busy ones (their tasks move elsewhere). Their jobs are cancelled. Asking for
        more than the tag has removes them all and warns.

        No held result is lost: a worker's results move to another worker (of any tag)
        before it leaves; when there is none, it stays, *retiring* (``tag_status``), until
        its results are released or can move. ``force=True`` removes at once, results and
        all. Removing workers by hand turns the tag's adapt off.

        Examples
        --------
        >>> cluster.remove_workers("gcam", 2)  # doctest: +SKIP
        """
        _tag_first("remove_workers", tag, n)
        pool = self.pool(tag)
        n = whole(n, "n=1")
        have = pool.target
        if n > have:
            warnings.warn(
                f"remove_workers({pool.tag!r}, {n}): tag {pool.tag!r} has only {have} worker(s), "
                f"so all of them are removed.",
                stacklevel=2,
            )
        removed = pool.scale_to(max(0, have - n), force=force)
        self._warn_if_stranded(pool)
        return removed

    def _warn_if_stranded(self, pool):
        if self.status != Status.running:
            return  # a closed cluster has nothing waiting
        # read on the event loop, which changes the scheduler's task sets
        waiting = self.sync(lambda: _value(pool.waiting_tasks()))
        pool.warn_if_stranded(waiting, stacklevel=4)

    def _spec_name(self, worker_name) -> str:
        """Spec entry a worker belongs to (a packed job's workers are ``<spec>-<i>``)."""
        return (
            self.pools[tag_of(worker_name)].spec_name(worker_name)
            if tag_of(worker_name) in self.pools
            else str(worker_name)
        )

    def scale_tag(self, tag, n, wait=True, force=False):
        """Set the number of workers of ``tag`` to ``n`` (turning its adapt off)."""
        pool = self.pool(tag)
        out = pool.scale_to(whole(n, "n=4"), wait=wait, force=force)
        if not n:
            self._warn_if_stranded(pool)
        return out

    def scale(self, n=0, memory=None, cores=None, tag=None, **kwargs):
        """``scale(n, tag=...)`` sets one tag's pool; ``scale(0)`` stops every worker."""
        if tag is not None or (n and len(self.pools) == 1):
            return self.scale_tag(tag, n)
        if n:
            raise ValueError(
                f"this cluster has several tags ({self._known_tags()}): say which one, e.g. "
                f"cluster.scale({n}, tag={next(iter(self.pools), 'gcam')!r})."
            )
        for pool in self.pools.values():
            pool.stop_adapt("the cluster was scaled to 0")
            pool.clear()
        self.worker_spec.clear()
        self.loop.add_callback(self._correct_state)

    # -- status -----------------------------------------------------------------------------
    def jobs(self) -> list:
        """This cluster's jobs (one status query for all of them)."""
        return self.sync(self._jobs_async)

    async def _tag_status(self) -> dict:
        jobs = await self._jobs_async()
        return {tag: pool.status(jobs) for tag, pool in list(self.pools.items())}

    def tag_status(self) -> dict:
        """Per tag: target, pending jobs, running/busy/idle/retiring workers, tasks waiting,
        the adapt range (or None), and a warning when tasks wait for a tag with no workers.

        Costs one job-status query (one ``squeue`` on Slurm) and no scheduler round trip.

        Examples
        --------
        >>> cluster.tag_status()["gcam"]["running"]  # doctest: +SKIP
        3
        """
        return self.sync(self._tag_status)

    async def _after_start(self):
        self._created_at = time.time()
        self._install_handlers()
        self._registry_update()
        self._watcher.start()

    async def _before_close(self):
        for pool in self.pools.values():
            pool.stop_adapt("the cluster closes")
        await self._watcher.stop()
        self._registry_remove()
        self._show_closed()

    def _update_worker_status(self, op, msg):
        # SpecCluster would cancel a departed worker's job after a delay, possibly hitting its
        # replacement; the recovery watcher owns that decision instead.
        Cluster._update_worker_status(self, op, msg)

    def warn_if_no_workers(self, tag):
        """Warn once per tag when tasks are sent to a tag with no workers requested."""
        if tag in self.pools:
            self.pools[tag].warn_if_empty()


async def _value(value):
    return value
