"""``SlurmCluster``: tagged, containerized Dask workers as Slurm jobs (on dask-jobqueue)."""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import time
import warnings

from dask.utils import parse_timedelta

from . import config, job_logs, original, records, runner, security, signals, versions
from .containers import check_work_dir, slurm_memory
from .jobqueue import SLURMCluster as _JobqueueSLURMCluster
from .records import job_name, job_tag, parse_squeue
from .scheduler import ScalableScheduler
from .slurm_jobs import SlurmSubmitter, TaggedSlurmJob
from .tag_options import check_walltime, gpu_directive, walltime_seconds
from .tagged import TaggedCluster, tag_of
from .walltime import WalltimeGuard

logger = logging.getLogger(__name__)

#: the distributed setting, as an environment variable, that makes nannies fork their workers
FORKSERVER_VAR = "DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD"


class SlurmCluster(TaggedCluster, _JobqueueSLURMCluster):
    """A Dask cluster whose workers are Slurm jobs running inside per-tag containers.

    The scheduler runs in this process, listening on ``interface`` (the one compute nodes
    reach). Each tag's workers are Slurm jobs running
    ``<runtime> exec --bind ... <tag image> python -m distributed.cli.dask_worker ...
    --resources <tag>=1``; workers added together become one job array.

    Parameters
    ----------
    queue : str, optional
        Partition (``#SBATCH -p``).
    walltime : str, optional
        Per job, ``HH:MM:SS``; settable later (``cluster.walltime = "04:00:00"``).
    account : str, optional
        Account (``#SBATCH -A``).
    interface : str, optional
        Network interface for the scheduler and workers, e.g. ``"ib0"``.
    silence_logs : str or bool
        Log level to silence (``False`` shows everything).
    work_dir : str, optional
        Holds ``containers/`` and ``logs/``; bound into every container as home and cwd.
        Default: the current directory.
    runtime : str, optional
        Container runtime name (``"apptainer"`` or ``"singularity"``).
    job_script_prologue : list of str, optional
        Shell lines before the worker starts, e.g. ``["module load apptainer"]``.
    job_extra_directives : list of str, optional
        Extra ``#SBATCH`` options, e.g. ``["--qos=high"]``.
    log_directory : str, optional
        Where job logs go (relative to ``work_dir``). Default ``logs``.
    job_arrays : bool, optional
        Submit each burst of a tag as one job array (default) or one job per worker.
    workers_per_job : int, optional
        Pack this many workers of a tag into one job, each with its share of the cpus and
        memory. The job imports Dask once and forks its workers from a warm process.
    nanny : bool, optional
        Run each worker under a nanny (default), which restarts it in place and ends it at
        its memory limit. ``nanny=False`` saves a process per worker; a lost worker is then
        replaced by a new job. Per tag: ``add_container(..., nanny=False)``.
    death_timeout : int, optional
        Seconds a worker waits for a lost scheduler before it exits (and its job ends).
    logs_location, suppress_logs, worker_env_vars, cpus, memory, run_scripts_path, \
use_run_scripts, comm_port, config_overwrite
        The original scalable's keywords (see :mod:`scalable.original`): ``logs_location``
        is ``log_directory``; ``suppress_logs=True`` has workers log errors only;
        ``worker_env_vars`` is every container's environment; ``cpus``/``memory`` size
        containers that do not give their own; ``<run_scripts_path>/<tag>_script.sh``
        (default ``<work_dir>/run_scripts``) wraps a tag's worker inside its container.
        ``comm_port`` and ``config_overwrite`` are accepted with a note (replaced).
    **kwargs
        Passed to ``dask_jobqueue.SLURMCluster`` (``security``, ``scheduler_options``, ...).

    Examples
    --------
    >>> cluster = SlurmCluster(queue='slurm', walltime='02:00:00', account='GCIMS',
    ...                        interface='ib0', silence_logs=False)        # doctest: +SKIP
    >>> cluster.add_container(tag="gcam", cpus=10, memory="20G", dirs={"/rcfs": "/rcfs"})  # doctest: +SKIP
    >>> cluster.add_workers(n=3, tag="gcam")  # doctest: +SKIP
    >>> print(cluster.job_script("gcam"))  # doctest: +SKIP
    """

    kind = "slurm"
    #: add_container takes queue=, account=, walltime=, gpus=, ... per tag
    job_options = True
    set_default_request_quantity = staticmethod(original.set_default_request_quantity)

    def __init__(
        self,
        queue=None,
        walltime=None,
        account=None,
        interface=None,
        silence_logs="error",
        *,
        work_dir=None,
        runtime=None,
        job_script_prologue=None,
        job_extra_directives=None,
        log_directory=None,
        job_arrays=None,
        workers_per_job=None,
        nanny=None,
        death_timeout=None,
        python=None,
        scheduler_options=None,
        **kwargs,
    ):
        if "n" in kwargs or "n_workers" in kwargs:
            raise TypeError(
                "SlurmCluster starts with no workers: add them per tag with "
                "cluster.add_workers(n=2, tag='gcam')."
            )
        self._original = original.take_original_keywords(kwargs, log_directory)
        log_directory = self._original.log_directory
        self._init_tags(work_dir, runtime)
        check_work_dir(self.work_dir)
        self._walltime = check_walltime(config.get("slurm.walltime", walltime))
        self.job_arrays = bool(config.get("slurm.job-arrays", job_arrays))
        k = config.get("slurm.workers-per-job", workers_per_job)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"workers_per_job={k!r} must be a whole number of 1 or more.")
        self.workers_per_spec = k
        self.nanny = self._check_nanny(config.get("slurm.nanny", nanny))
        self.python = config.get("container.python", python)
        self.log_directory = check_work_dir(
            os.path.join(self.work_dir, config.get("slurm.log-directory", log_directory))
        )
        self.start_delay = float(config.get("slurm.submit-window"))
        self._submitter = SlurmSubmitter(window=self.start_delay, cwd=self.work_dir)
        interface = config.get("slurm.interface", interface)
        # TLS files for workers must be readable on compute nodes and inside images: the work
        # directory is both (it is every container's home)
        self._init_security(
            kwargs.pop("security", None),
            f"any user on the network of {interface}"
            if interface
            else "any user of this machine or its network",
            parent=lambda: security.tls_parent(self.work_dir),
        )
        kwargs["name"] = kwargs.get("name") or self._default_name()
        options = {
            "dashboard_address": config.get("slurm.dashboard-address"),
            "dashboard_prefix": self.dashboard_prefix,
        }
        options.update(scheduler_options or {})
        try:
            super().__init__(
                queue=config.get("slurm.queue", queue),
                account=config.get("slurm.account", account),
                walltime=self._walltime,
                interface=interface,
                silence_logs=silence_logs,
                job_script_prologue=list(
                    config.get("slurm.job-script-prologue", job_script_prologue)
                ),
                job_extra_directives=list(
                    config.get("slurm.job-extra-directives", job_extra_directives)
                ),
                death_timeout=config.get("slurm.death-timeout", death_timeout),
                scheduler_options=options,
                scheduler_cls=ScalableScheduler,
                # placeholders: every tag brings its own cpus and memory
                cores=1,
                memory="1GiB",
                security=self._tls and self._tls.security,
                **kwargs,
            )
        except BaseException:
            self._close_security()  # nothing half-done: no key left behind
            raise
        # from here on a SIGTERM/SIGHUP closes this cluster first (a closed SSH session, a
        # killed JupyterLab); the constructor runs in the caller's thread, close() too
        signals.hold(self)

    def close(self, timeout=None):
        try:
            return super().close(timeout)
        finally:
            signals.release(self)

    def _close_on_signal(self):
        """Close from a signal handler, which runs in the main thread between two bytecodes."""
        loop = getattr(self.loop, "asyncio_loop", None)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is None or running is not loop:
            self.close(timeout=120)
            return
        # the cluster's own loop is the one interrupted: it cannot run close(), so cancel the
        # jobs the way `scalable cleanup` does, by this cluster's job names
        for tag in self.containers:
            runner.run(
                ["scancel", f"--name={job_name(self.cluster_id, tag)}"],
                cwd=self.work_dir,
                timeout=60,
                check=False,
            )
        self._close_security()  # before the record: `scalable cleanup` finds keys by it
        records.remove(self.work_dir, self.cluster_id)

    async def _start(self):
        await super()._start()
        await self._after_start()
        records.write(self.work_dir, self.cluster_id, scheduler=self.scheduler.address)
        self.scheduler.add_plugin(
            WalltimeGuard(
                self.scheduler,
                self._walltime_advice,
                int(config.get("recovery.walltime-losses")),
            )
        )
        await self._report_leftovers()

    async def _report_leftovers(self):
        said = await asyncio.get_running_loop().run_in_executor(
            None, records.leftover_warnings, self.work_dir, self.cluster_id
        )
        for sentence in said:
            warnings.warn(sentence, stacklevel=2)

    async def _close(self):
        await self._before_close()
        await super()._close()
        # only once its jobs are cancelled and its keys removed: until then `scalable
        # cleanup` must find them
        self._close_security()
        records.remove(self.work_dir, self.cluster_id)

    # -- per-tag job options --------------------------------------------------------------
    @property
    def walltime(self) -> str:
        """Walltime of jobs submitted from now on (``HH:MM:SS``)."""
        return self._walltime

    @walltime.setter
    def walltime(self, value):
        self._walltime = check_walltime(value)
        self._job_kwargs["walltime"] = self._walltime
        # jobs not yet submitted (and replacements) use the new walltime too
        for name, spec in self.worker_spec.items():
            if name not in self.workers:
                spec["options"] = self._job_options(tag_of(name))
        self._registry_update()

    def _walltime_of(self, tag=None) -> str:
        """The walltime of ``tag``'s jobs: its own, else the cluster's."""
        pool = self.pools.get(tag)
        return (pool and pool.options.get("walltime")) or self._walltime

    def _walltime_advice(self, tag=None) -> tuple[str, str]:
        """``tag``'s walltime and lifetime, and the code that raises them (WalltimeGuard)."""
        text = f"{self._walltime_of(tag)}, workers retire after {self._lifetime_seconds(tag)} s"
        pool = self.pools.get(tag)
        if pool is not None and pool.options.get("walltime"):
            return text, f"cluster.add_container({tag!r}, ..., walltime='HH:MM:SS')"
        return text, "cluster.walltime = 'HH:MM:SS'"

    def _lifetime_seconds(self, tag=None) -> int:
        """How long a worker lives: ``lifetime`` if set, else its walltime minus a margin."""
        total = walltime_seconds(self._walltime_of(tag))
        lifetime = config.get("slurm.lifetime")
        if lifetime is not None:
            return int(parse_timedelta(lifetime))
        return int(total - min(parse_timedelta(config.get("slurm.lifetime-margin")), total / 5))

    def _lifetime_args(self, tag=None) -> list:
        """``--lifetime`` so workers retire before Slurm kills them at walltime."""
        life = self._lifetime_seconds(tag)
        stagger = min(parse_timedelta(config.get("slurm.lifetime-stagger")), life / 10)
        return ["--lifetime", f"{life}s", "--lifetime-stagger", f"{int(stagger)}s"]

    def _container_defaults(self) -> dict:
        return self._original.defaults

    def _prepare_container(self, spec):
        original.run_script(self._original, spec, self.work_dir)  # refused now, not at submit

    def _job_options(self, tag) -> dict:
        spec = self.containers[tag]
        k = self.workers_per_spec
        nanny = self._nanny_of(tag)
        env = original.worker_env(self._original, spec.env)
        own = self.pools[tag].options  # the tag's own queue, walltime, gpus, ...
        prologue = [
            *(self._job_kwargs.get("job_script_prologue") or []),
            *own.get("job_script_prologue", []),
        ]
        if k > 1 and nanny:
            # The job's process imports Dask once; its nannies then start their workers by
            # forking a server that has Dask imported already (distributed preloads itself
            # into multiprocessing's forkserver). The server is single-threaded, so forking
            # it is safe, unlike forking the nannies' process once its threads and event
            # loop run. The default, spawn, imports Dask again in every worker.
            env = {**env, FORKSERVER_VAR: env.get(FORKSERVER_VAR, "forkserver")}
            if not spec.image:
                prologue.append(f"export {FORKSERVER_VAR}={shlex.quote(env[FORKSERVER_VAR])}")
        wrapper = original.run_script(self._original, spec, self.work_dir)
        python = spec.image and shlex.join(
            self.runtime.exec_argv(
                spec.image,
                [*filter(None, [wrapper]), *versions.worker_python(self.python)],
                binds=spec.dirs,
                # the worker's HTTP server answers nothing (see scalable.security)
                env={**env, **security.WORKER_HTTP_ENV},
                home=self.work_dir,
                cwd=self.work_dir,
            )
        )
        # (dask-jobqueue joins worker arguments unquoted into the script)
        preload = ["--preload", shlex.quote(spec.preload)] if spec.preload else []
        log_name = "%x-%A_%a.log" if self.job_arrays else "%x-%j.log"
        gpus = [gpu_directive(own["gpus"])] if own.get("gpus") else []
        options = dict(self._job_kwargs)
        options.update(
            tag=tag,
            tag_options=dict(own),
            submitter=self._submitter,
            array=self.job_arrays,
            work_dir=self.work_dir,
            log_directory=self.log_directory,
            cores=spec.cpus,
            memory=spec.memory,
            # exactly what the tag asked for, in MiB (dask-jobqueue would round 1500M up to 2G)
            job_mem=slurm_memory(spec.memory),
            processes=k,
            nanny=nanny,
            job_script_prologue=prologue,
            python=python or self.python,
            job_name=job_name(self.cluster_id, tag),
            walltime=self._walltime_of(tag),
            queue=own.get("queue", self._job_kwargs.get("queue")),
            account=own.get("account", self._job_kwargs.get("account")),
            # the worker's own HTTP server stays on the node's loopback, serving nothing; no
            # Bokeh pages either: importing Bokeh was most of what a worker cost to start once
            # Dask is imported (0.4-0.5 s of CPU each)
            worker_extra_args=[
                "--resources",
                f"{tag}=1",
                "--no-dashboard",
                "--dashboard-address",
                "127.0.0.1:0",
                *preload,
                *self._lifetime_args(tag),
            ],
            job_extra_directives=[
                # quoted as sbatch reads #SBATCH lines; "%" in the directory is not a pattern
                f"-o {shlex.quote(self.log_directory.replace('%', '%%') + '/' + log_name)}",
                *self._job_kwargs.get("job_extra_directives", []),
                *gpus,
                *own.get("job_extra_directives", []),
            ],
        )
        if spec.cpus % k:
            raise ValueError(
                f"container {tag!r}: cpus={spec.cpus} cannot be shared by workers_per_job={k}: "
                f"use a multiple of {k}."
            )
        return options

    def _worker_spec(self, tag, name) -> dict:
        # made on first use, not by the constructor: creating a cluster writes nothing; never
        # group-writable (umask 002): others could plant links or FIFOs at the log names
        os.makedirs(self.log_directory, mode=0o755, exist_ok=True)
        spec = {"cls": TaggedSlurmJob, "options": self._job_options(tag)}
        if self.workers_per_spec > 1:
            spec["group"] = [f"-{i}" for i in range(self.workers_per_spec)]
        return spec

    def job_script(self, tag=None) -> str:
        """The batch script a worker of ``tag`` is submitted with.

        Examples
        --------
        >>> print(cluster.job_script("gcam"))  # doctest: +SKIP
        #!/usr/bin/env bash
        #SBATCH -J sc-3f2a...-gcam
        ...
        """
        tag = self._check_tag(tag)
        options = self._job_options(tag)
        job = TaggedSlurmJob(self.scheduler.address, name=f"{tag}-N", **options)
        return job.job_script()

    @property
    def job_header(self):
        # dask-jobqueue's is the header of an untagged placeholder job: every job has a tag
        raise AttributeError(
            "job headers are per tag: print(cluster.job_script('gcam')) shows "
            "a tag's whole script, header included"
        )

    @property
    def job_name(self):
        raise AttributeError(
            "job names are per tag: sc-<cluster id>-<tag> (see cluster.job_script('gcam'))"
        )

    # -- status ---------------------------------------------------------------------------
    @property
    def slurm_commands(self) -> dict:
        """Slurm commands this cluster issued, by program (``{"sbatch": 2, "scancel": 1}``)."""
        return dict(self._submitter.commands)

    async def _jobs_async(self, fresh=False) -> list:
        """This cluster's jobs. Status readers (panel, sidebar, ``tag_status``) share one
        ``squeue`` per second; ``fresh=True`` (recovery) always asks Slurm itself."""
        if fresh:
            return await self._query_jobs()
        # a submission or cancellation since the last answer makes it stale at once
        stamp = (self._submitter.commands["sbatch"], self._submitter.commands["scancel"])
        cached = getattr(self, "_jobs_cache", None)
        if cached and cached[1] == stamp and time.monotonic() - cached[0] < 1.0:
            return cached[2]
        if getattr(self, "_jobs_inflight", None) is None:
            self._jobs_inflight = asyncio.ensure_future(self._query_jobs())
        task = self._jobs_inflight
        try:
            jobs = await asyncio.shield(task)
        finally:
            if task.done() and self._jobs_inflight is task:
                self._jobs_inflight = None
        self._jobs_cache = (time.monotonic(), stamp, jobs)
        return jobs

    async def _query_jobs(self) -> list:
        if not self.containers:
            return []
        names = ",".join(job_name(self.cluster_id, tag) for tag in self.containers)
        self._submitter.commands["squeue"] += 1
        result = await runner.arun(
            ["squeue", "--noheader", "--array", f"--name={names}", "--format=%i|%T|%r|%N|%j"],
            cwd=self.work_dir,
            timeout=60,
        )
        jobs = parse_squeue(result.stdout, ("job_id", "state", "reason", "node", "tag"))
        for job in jobs:
            job["tag"] = job_tag(job["tag"])
            job["worker"] = self._worker_of_job(job["job_id"])
        return jobs

    def _worker_of_job(self, job_id):
        for name, job in self.workers.items():
            if getattr(job, "job_id", None) == job_id:
                return name
        return None

    def _log_path(self, job) -> str:
        return job_logs.path(self.log_directory, self.cluster_id, job)

    def _read_log(self, job, lines=50) -> str:
        return job_logs.tail(self._log_path(job), lines)

    def _failure_detail(self, job) -> str:
        return f"{self._log_path(job)}:\n{self._read_log(job, 15)}"

    def _start_refusal(self, job):
        spec = self.containers.get(job.tag)
        return versions.refusal(self._read_log(job, 50), job.tag, spec and spec.image)

    def _has_job_prologue(self, tag=None) -> bool:
        pool = self.pools.get(tag)
        return bool(
            self._job_kwargs.get("job_script_prologue")
            or (pool and pool.options.get("job_script_prologue"))
        )

    def _ended_outside(self, job) -> bool:
        return job_logs.ended_outside(self._log_path(job))

    def logs(self, tag=None, lines=50) -> dict:
        """The last ``lines`` of each current job log of ``tag``: {worker name: text}."""
        tag = self._check_tag(tag)
        return {
            name: self._read_log(job, lines)
            for name, job in self.workers.items()
            if tag_of(name) == tag and getattr(job, "job_id", None)
        }
