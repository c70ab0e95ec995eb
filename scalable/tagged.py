"""Per-tag worker pools on top of :class:`distributed.deploy.SpecCluster`.

A worker of tag ``T`` is a ``worker_spec`` entry named ``T-<n>`` whose options carry ``tag=T``;
the worker offers the Dask resource ``T=1``, so ``ScalableClient.submit(..., tag=T)`` runs only
there. :class:`TaggedCluster` is a mixin: :class:`scalable.slurm.SlurmCluster` and
:class:`scalable.local.LocalCluster` combine it with their SpecCluster base and supply
``_worker_spec(tag, name)``, ``_jobs_async()`` and the class attributes below.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import os
import time
import uuid
import warnings

from distributed.core import Status
from distributed.deploy.cluster import Cluster

from . import config
from .containers import ContainerError, ContainerSpec, check_tag, make_spec
from .exposure import ExposedCluster
from .recovery import HOPELESS_REASONS, Watcher
from .runtimes import get_runtime

logger = logging.getLogger(__name__)

#: Slurm states in which a job has not started its worker yet.
PENDING_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "RESIZING", "SUSPENDED"}


class UnknownTagError(KeyError, ValueError):
    """A tag that was never given to ``add_container``."""

    def __str__(self):  # KeyError would print the message with quotes around it
        return str(self.args[0])


def _whole(n, example) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n={n!r} must be a whole number of workers, e.g. {example}.")
    most = int(config.get("max-workers-per-tag"))
    if n > most:  # a typo, not a request: it would fill memory with worker specs
        raise ValueError(
            f"n={n} is more than scalable.max-workers-per-tag ({most}): ask for fewer, e.g. "
            f"{example}, or raise that setting if you truly need more."
        )
    return n


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


def tag_of(name) -> str:
    """The tag encoded in a worker or spec name (``gcam-3`` or, packed, ``gcam-3-1``).

    Tags never contain a dash, so the part before the first dash is the tag, exactly.

    Examples
    --------
    >>> tag_of("gcam-3"), tag_of("my_model-12-0")
    ('gcam', 'my_model')
    """
    return str(name).split("-", 1)[0]


class TaggedCluster(ExposedCluster):
    """Mixin giving a SpecCluster per-tag containers and worker pools."""

    #: workers per worker_spec entry (one Slurm job may pack several)
    workers_per_spec = 1
    #: seconds to wait for more add_workers calls before starting workers
    start_delay = 0.0
    #: whether add_container insists on an image file (Slurm: yes; local: only if path= given)
    require_image = True
    #: whether each worker runs under a nanny unless its tag says otherwise
    nanny = True
    kind = "cluster"

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
        self.containers: dict[str, ContainerSpec] = {}
        self.cluster_id = uuid.uuid4().hex[:10]
        self._counters: dict[str, itertools.count] = {}
        self._warned_no_workers: set[str] = set()
        self._tag_nanny: dict[str, bool] = {}  # per-tag nanny= given to add_container
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
    def add_container(self, tag, dirs=None, path=None, cpus=None, memory=None,
                      preload_script=None, *, env=None, nanny=None):
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
                + (f", memory={path!r}" if isinstance(path, str) else "") + ")."
            )
        nanny = self._check_nanny(nanny)
        spec = make_spec(
            tag, cpus, memory, dirs, path, env, preload_script,
            work_dir=self.work_dir, runtime=self.runtime, require_image=self.require_image,
            prologue=self._has_job_prologue(), defaults=self._container_defaults(),
        )
        self._prepare_container(spec)
        self.containers[spec.tag] = spec
        if nanny is None:
            self._tag_nanny.pop(spec.tag, None)
        else:
            self._tag_nanny[spec.tag] = nanny
        self._counters.setdefault(spec.tag, itertools.count())
        self._registry_update()
        return spec

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
        return self._tag_nanny.get(tag, self.nanny)

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

    def _names(self, tag) -> list:
        """Spec names of ``tag``, leaving out workers about to retire (already replaced)."""
        retiring = self._watcher.retiring
        # list() copies atomically: the event loop thread may change worker_spec meanwhile
        return [n for n in list(self.worker_spec) if tag_of(n) == tag and n not in retiring]

    def _new_name(self, tag) -> str:
        return f"{tag}-{next(self._counters[tag])}"

    def _target(self, tag) -> int:
        return (len(self._names(tag)) + len(self._watcher.owed.get(tag, ()))) * self.workers_per_spec

    @property
    def targets(self) -> dict:
        """Requested workers per tag (``{"gcam": 3}``), replacements on their way included."""
        return {tag: self._target(tag) for tag in self.containers}

    @property
    def tag_errors(self) -> dict:
        """Tags whose workers kept failing to start, with the reason (see ``recovery``)."""
        return dict(self._watcher.errors)

    def add_workers(self, tag=None, n=0, wait=True):
        """Start ``n`` more workers of ``tag``.

        Submission failures (an invalid partition, too much memory, ...) raise here with
        Slurm's message, and the failed workers are forgotten, so nothing is left half-done.

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
        tag = self._check_tag(tag)
        n = _whole(n, "n=2")
        self._watcher.reset(tag)
        new = {}
        for _ in range(math.ceil(n / self.workers_per_spec)):
            name = self._new_name(tag)
            new[name] = self._worker_spec(tag, name)
        if not new:
            return []
        # added here, at once, so that calls in quick succession are started (and submitted)
        # together by the next state correction
        self.worker_spec.update(new)
        if not wait:
            self.loop.add_callback(self._start_new, list(new))
            return list(new)
        return self.sync(self._start_new, list(new), True)

    add_worker = add_workers  # the spelling of the original README

    async def _add_specs(self, new, raise_errors=False):
        """Add worker specs from the event loop (scheduler handlers, recovery) and start them."""
        if self.status not in (Status.running, Status.starting, Status.created):
            return []
        self.worker_spec.update(new)
        return await self._start_new(list(new), raise_errors)

    async def _start_new(self, names, raise_errors=False):
        error = None
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

    def remove_workers(self, tag=None, n=0):
        """Stop ``n`` workers of ``tag``: jobs not started yet first, then idle workers,
        then busy ones (their tasks move elsewhere). Their jobs are cancelled. Asking for
        more than the tag has removes them all and warns.

        Examples
        --------
        >>> cluster.remove_workers("gcam", 2)  # doctest: +SKIP
        """
        _tag_first("remove_workers", tag, n)
        tag = self._check_tag(tag)
        n = _whole(n, "n=1")
        have = self._target(tag)
        if n > have:
            warnings.warn(
                f"remove_workers({tag!r}, {n}): tag {tag!r} has only {have} worker(s), so all "
                f"of them are removed.",
                stacklevel=2,
            )
        return self.sync(self._remove, tag, n)

    async def _remove(self, tag, n):
        n_specs = math.ceil(n / self.workers_per_spec)
        owed = self._watcher.owed.get(tag, [])
        while owed and n_specs:  # replacements not submitted yet go first
            owed.pop()
            n_specs -= 1
        names = self._names(tag)
        n_specs = min(len(names), n_specs)
        if not n_specs:
            return []
        connected = {}  # spec name -> (busy, [addresses])
        for ws in self.scheduler.workers.values():
            spec_name = self._spec_name(ws.name)
            if spec_name in names:
                busy, addrs = connected.get(spec_name, (False, []))
                connected[spec_name] = (busy or bool(ws.processing), addrs + [ws.address])
        order = sorted(
            names, key=lambda s: (s in connected, connected.get(s, (False,))[0], -names.index(s))
        )
        chosen = order[:n_specs]
        addresses = [a for s in chosen if s in connected for a in connected[s][1]]
        if addresses:
            # graceful: data held only by these workers moves before they close
            await self.scheduler.retire_workers(workers=addresses, close_workers=True, remove=True)
        for name in chosen:
            self.worker_spec.pop(name, None)
        await self._correct_state()
        return chosen

    def _spec_name(self, worker_name) -> str:
        """Spec entry a worker belongs to (a packed job's workers are ``<spec>-<i>``)."""
        name = str(worker_name)
        if name in self.worker_spec or self.workers_per_spec == 1:
            return name
        return name.rsplit("-", 1)[0]

    def scale_tag(self, tag, n, wait=True):
        """Set the number of workers of ``tag`` to ``n``."""
        tag = self._check_tag(tag)
        n = _whole(n, "n=4")
        have = self._target(tag)
        if n > have:
            return self.add_workers(tag, n - have, wait=wait)
        if n < have:
            return self.remove_workers(tag, have - n)
        return []

    def scale(self, n=0, memory=None, cores=None, tag=None, **kwargs):
        """``scale(n, tag=...)`` sets one tag's pool; ``scale(0)`` stops every worker."""
        if tag is not None or (n and len(self.containers) == 1):
            return self.scale_tag(tag, n)
        if n:
            raise ValueError(
                f"this cluster has several tags ({self._known_tags()}): say which one, e.g. "
                f"cluster.scale({n}, tag={next(iter(self.containers), 'gcam')!r})."
            )
        self._watcher.owed.clear()  # replacements on their way are not wanted either
        self._watcher.retiring.clear()
        self.worker_spec.clear()
        self.loop.add_callback(self._correct_state)

    # -- status -----------------------------------------------------------------------------
    async def _jobs_async(self, fresh=False) -> list:
        """This cluster's jobs: dicts with job_id, name, tag, state, reason, node."""
        raise NotImplementedError

    def jobs(self) -> list:
        """This cluster's jobs (one status query for all of them)."""
        return self.sync(self._jobs_async)

    async def _tag_status(self) -> dict:
        jobs = await self._jobs_async()
        s = self.scheduler
        out = {}
        for tag, spec in self.containers.items():
            ws_list = [ws for ws in s.workers.values() if tag in (ws.resources or {})]
            busy = sum(1 for ws in ws_list if ws.processing)
            waiting = sum(
                1 for ts in s.unrunnable if (ts.resource_restrictions or {}).get(tag)
            ) + sum(max(0, len(ws.processing) - ws.nthreads) for ws in ws_list)
            stuck = sorted({j["reason"] for j in jobs if j["tag"] == tag
                            and j["state"] in PENDING_STATES and j["reason"] in HOPELESS_REASONS})
            out[tag] = {
                "target": self._target(tag),
                "pending": sum(
                    self.workers_per_spec for j in jobs
                    if j["tag"] == tag and j["state"] in PENDING_STATES
                ),
                "running": len(ws_list),
                "busy": busy,
                "idle": len(ws_list) - busy,
                "waiting_tasks": waiting,
                "stuck": stuck,  # pending for reasons that never clear by waiting
                "error": self._watcher.errors.get(tag),
                **spec.describe(),
            }
        return out

    def tag_status(self) -> dict:
        """Per tag: target, pending jobs, running/busy/idle workers, tasks waiting.

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
        await self._watcher.stop()
        self._registry_remove()
        self._show_closed()

    # -- hooks for recovery (overridden per backend) -----------------------------------------
    def _update_worker_status(self, op, msg):
        # SpecCluster would cancel a departed worker's job after a delay, possibly hitting its
        # replacement; the recovery watcher owns that decision instead.
        Cluster._update_worker_status(self, op, msg)

    def _job_alive(self, worker, live_ids) -> bool:
        job_id = getattr(worker, "job_id", None)
        if job_id is not None:
            return job_id in live_ids
        return getattr(worker, "running", True)

    def _failure_detail(self, worker) -> str:
        return ""

    def _start_refusal(self, worker) -> str | None:
        """Why a worker that ended before connecting can never start (one sentence), or None."""
        return None

    def _has_job_prologue(self) -> bool:
        """Whether workers start after lines of the user's (which may load the runtime)."""
        return False

    def _ended_outside(self, worker) -> bool:
        """Whether the worker's job was ended from outside before its worker could connect
        (cancelled while pending or starting, preempted): then it is no failed start."""
        return False

    def _lifetime_seconds(self):
        return None

    def warn_if_no_workers(self, tag):
        """Warn once per tag when tasks are sent to a tag with no workers requested."""
        if tag not in self._warned_no_workers and not self._names(tag):
            self._warned_no_workers.add(tag)
            warnings.warn(
                f"tag {tag!r} has no workers yet: its tasks wait until you call "
                f"cluster.add_workers({tag!r}, 1).",
                stacklevel=3,
            )
