"""Slurm jobs for tagged workers, submitted in bursts.

:class:`TaggedSlurmJob` is a dask-jobqueue ``SLURMJob`` whose worker runs inside the tag's
container. Its ``start``/``close`` go through a :class:`SlurmSubmitter` shared by the cluster:
every job started within a short window becomes one ``sbatch --array`` per tag (one task per
worker), and every cancellation in a window becomes one ``scancel``. That keeps the cost to the
shared Slurm controller constant, whatever the number of workers.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
from collections import defaultdict

from distributed.deploy.spec import ProcessInterface

from . import runner
from .jobqueue import SLURMJob
from .runner import SubmitError
from .tag_options import refused_option

logger = logging.getLogger(__name__)

__all__ = ["NAME_VAR", "SlurmSubmitter", "SubmitError", "TaggedSlurmJob"]

#: The worker's name is set by the script, so one script serves a whole array.
NAME_VAR = "SCALABLE_WORKER_NAME"


class TaggedSlurmJob(SLURMJob):
    """One Slurm job (or array task) running ``workers_per_job`` workers of one tag.

    Parameters
    ----------
    tag : str
        The worker's tag; the worker offers the resource ``tag=1``.
    submitter : SlurmSubmitter
        Shared by the cluster; batches submissions and cancellations.
    array : bool
        Submit as part of a job array (the default) or as a job of its own.
    work_dir : str
        Where ``sbatch`` runs (jobs start there).
    log_directory : str
        Where job logs go; a burst of one is submitted as a plain job, named ``%x-%j.log``.
    tag_options : dict, optional
        The tag's own job options (``queue``, ``walltime``, ``gpus``, ...), named when Slurm
        refuses the job.
    **kwargs
        Everything ``dask_jobqueue.SLURMJob`` takes.
    """

    def __init__(
        self,
        scheduler=None,
        name=None,
        *,
        tag=None,
        submitter=None,
        array=True,
        work_dir=None,
        log_directory=None,
        security=None,
        worker_extra_args=(),
        tag_options=None,
        **kwargs,
    ):
        # dask-jobqueue joins the worker command with spaces, unquoted: the TLS file paths
        # (under the work directory, which may hold spaces) are quoted here instead
        tls = []
        for key, value in (security.get_tls_config_for_role("worker") if security else {}).items():
            if key != "ciphers" and value is not None:  # ciphers has no command-line option
                tls += ["--tls-" + key.replace("_", "-"), shlex.quote(str(value))]
        # A shell variable as the name lets every task of an array pick its own name.
        super().__init__(
            scheduler=scheduler,
            name="${%s}" % NAME_VAR,
            worker_extra_args=[*worker_extra_args, *tls],
            **kwargs,
        )
        self.name = name
        self.tag = tag
        self.tag_options = dict(tag_options or {})  # the tag's own queue=, walltime=, ...
        self.array = array
        self.work_dir = work_dir
        self.log_directory = log_directory
        self.submitter = submitter
        self.start_error = None

    @property
    def worker_process_memory(self) -> str:
        """Each worker's ``--memory-limit``: its exact share of the job's memory (dask-jobqueue
        would round it to three digits, e.g. 1500M -> 1.46GiB)."""
        share = int(self.worker_memory) // self.worker_processes
        return f"{share // 2**20}MiB" if share % 2**20 == 0 else str(share)

    def job_script(self, names=None):
        """The batch script; ``names`` are the workers of an array, in task order."""
        names = list(names or [self.name])
        if self.array:
            quoted = " ".join(shlex.quote(str(n)) for n in names)
            assign = [
                f"SCALABLE_NAMES=({quoted})",
                f"{NAME_VAR}=${{SCALABLE_NAMES[${{SLURM_ARRAY_TASK_ID:-0}}]}}",
            ]
        else:
            assign = [f"{NAME_VAR}={shlex.quote(str(names[0]))}"]
        pieces = {
            "shebang": self.shebang,
            "job_header": self.job_header,
            "job_script_prologue": "\n".join(filter(None, [*self._job_script_prologue, *assign])),
            "worker_command": self._command_template,
        }
        return self._script_template % pieces

    async def start(self):
        try:
            self.job_id = await self.submitter.submit(self)
        except Exception as e:
            self.start_error = e
            raise
        logger.debug("worker %s is job %s", self.name, self.job_id)
        await ProcessInterface.start(self)

    async def close(self):
        if self.job_id:
            await self.submitter.cancel(self.job_id)
        await ProcessInterface.close(self)

    @staticmethod
    async def _call(cmd, **kwargs):
        # dask-jobqueue's own calls (if any) also go through scalable's one door
        return (await runner.arun(list(cmd))).stdout


class SlurmSubmitter:
    """Coalesces job starts into ``sbatch --array`` calls and cancels into one ``scancel``.

    Parameters
    ----------
    window : float
        Seconds to wait for more requests before submitting.
    cwd : str
        Directory ``sbatch`` runs in.

    Attributes
    ----------
    commands : collections.Counter
        Slurm commands issued, by program name (benchmarks and tests read it).
    """

    def __init__(self, window=0.05, cwd=None):
        self.window = window
        self.cwd = cwd
        self._starts = defaultdict(list)  # batch key -> [(job, future)]
        self._cancels = []  # [(job_id, future)]
        self.commands = defaultdict(int)

    async def submit(self, job: TaggedSlurmJob) -> str:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        # jobs share an array only when their scripts differ by nothing but the name
        key = (job.tag, job.array, job.job_script(names=["-"])) if job.array else id(job)
        first = key not in self._starts
        self._starts[key].append((job, fut))
        if first:
            loop.call_later(self.window, lambda: asyncio.ensure_future(self._flush_start(key)))
        return await fut

    async def _flush_start(self, key):
        batch = self._starts.pop(key, [])
        if not batch:
            return
        jobs = [job for job, _ in batch]
        argv = ["sbatch", "--parsable"]
        array = jobs[0].array and len(jobs) > 1
        if array:
            argv.append(f"--array=0-{len(jobs) - 1}")
        elif jobs[0].array and jobs[0].log_directory:
            # A burst of one goes as a plain job: Slurm starts it sooner than an array of one
            # (0.07 s on the test cluster). Its log is named as a job's, overriding the script's.
            argv.append(f"--output={jobs[0].log_directory.replace('%', '%%')}/%x-%j.log")
        script = jobs[0].job_script(names=[j.name for j in jobs])
        self.commands["sbatch"] += 1
        try:
            result = await runner.arun(argv, input=script, cwd=self.cwd, timeout=120)
        except Exception as e:  # every waiting start must hear of it, or add_workers hangs
            if not isinstance(e, runner.CommandError):
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(e)
                return
            said = "; ".join(line.strip() for line in e.stderr.splitlines() if line.strip())
            tag = jobs[0].tag
            option = refused_option(said, jobs[0].tag_options)
            whose = (
                f"the tag's own {option} (cluster.add_container({tag!r}, ..., "
                f"{option.split('=')[0]}=...))"
                if "," not in option and option.split("=")[0] in jobs[0].tag_options
                else option
            )
            error = SubmitError(
                f"Slurm refused the {tag!r} workers: {said or e} "
                f"(command: {shlex.join(argv)}). Check {whose} against what the partition "
                f"allows."
            )
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(error)
            return
        base = result.stdout.strip().split(";")[0]
        for i, (_, fut) in enumerate(batch):
            if not fut.done():
                fut.set_result(f"{base}_{i}" if array else base)

    async def cancel(self, job_id: str):
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        first = not self._cancels
        self._cancels.append((job_id, fut))
        if first:
            # cancels issued together (close(), remove_workers) share one scancel
            loop.call_soon(lambda: asyncio.ensure_future(self._flush_cancel()))
        await fut

    async def _flush_cancel(self):
        await asyncio.sleep(0)  # let every close() started in this tick join
        batch, self._cancels = self._cancels, []
        if not batch:
            return
        ids = sorted({job_id for job_id, _ in batch})
        self.commands["scancel"] += 1
        try:
            result = await runner.arun(["scancel", *ids], cwd=self.cwd, timeout=60, check=False)
            said = result.stderr.strip()
            if (
                result.returncode
                and said
                and not all(
                    "Invalid job id" in line or "already completing" in line
                    for line in said.splitlines()
                )
            ):
                # jobs that already ended are fine; anything else may leave jobs queued
                logger.warning(
                    "scancel %s failed: %s (check with `scalable jobs`)", " ".join(ids), said
                )
        except Exception as e:
            logger.warning("scancel %s failed: %s (check with `scalable jobs`)", " ".join(ids), e)
        finally:
            for _, fut in batch:
                if not fut.done():
                    fut.set_result(None)
