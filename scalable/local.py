"""``LocalCluster``: the same tagged API with no Slurm, for laptops, demos and tests.

Workers are local processes: a :class:`distributed.Nanny` for a tag without an image (or, with
``nanny=False``, ``python -m distributed.cli.dask_worker --no-nanny``), and
``<runtime> exec <image> python -m distributed.cli.dask_worker ...`` for a tag with one.
Everything listens on loopback, which every user of the machine reaches: so everything speaks
TLS, and the dashboard hides under a secret prefix (see :mod:`scalable.security`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import signal
import sys

from distributed import Nanny
from distributed.deploy.spec import ProcessInterface, SpecCluster

from . import config, security, versions
from .scheduler import ScalableScheduler
from .tagged import TaggedCluster

logger = logging.getLogger(__name__)


class ContainerWorker(ProcessInterface):
    """A worker process started through the container runtime.

    Parameters
    ----------
    scheduler : str
        Scheduler address.
    name : str
        Worker name (``<tag>-<n>``).
    argv : list of str
        The full command, ``[runtime, "exec", ..., image, python, "-m", ...]`` minus the
        scheduler address and name, which are appended here.
    cwd : str
        Working directory of the runtime process.
    env : dict, optional
        Variables added to this process's environment for the worker.
    """

    def __init__(self, scheduler=None, name=None, argv=(), cwd=None, env=None, **kwargs):
        super().__init__(scheduler=scheduler, name=name)
        self.name = name
        self.argv = [*argv, scheduler, "--name", str(name)]
        self.cwd = cwd
        self.env = {**os.environ, **env} if env else None
        self.proc = None
        self.tail = collections.deque(maxlen=50)  # last lines of its stderr

    async def start(self):
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            cwd=self.cwd,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            # its own process group, so close() also stops what the runtime started
            start_new_session=True,
        )
        self._stderr_task = asyncio.ensure_future(self._relay_stderr())
        await super().start()

    async def _relay_stderr(self):
        # passed on to this process's stderr, as before, keeping the end for failure reports
        async for line in self.proc.stderr:
            text = line.decode(errors="replace")
            self.tail.append(text)
            sys.stderr.write(text)

    async def close(self):
        if self.proc is not None and self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                await asyncio.wait_for(self.proc.wait(), 10)
            except ProcessLookupError:
                pass
            except asyncio.TimeoutError:
                os.killpg(self.proc.pid, signal.SIGKILL)
                await self.proc.wait()
        await super().close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None


class LocalCluster(TaggedCluster, SpecCluster):
    """Tagged workers as local processes: the embedded default (no Slurm needed).

    Parameters
    ----------
    work_dir : str, optional
        Holds ``containers/``; bound into containers as home and cwd. Default: cwd.
    runtime : str, optional
        Container runtime for tags with an image (``"apptainer"``).
    death_timeout : int, optional
        Seconds a worker waits for a lost scheduler before it exits.
    nanny : bool, optional
        Run each worker under a nanny (default); ``nanny=False`` starts one process per
        worker. Per tag: ``add_container(..., nanny=False)``.
    silence_logs : str or bool
        Log level to silence.
    security : bool or distributed.security.Security, optional
        TLS with temporary certificates by default (``scalable.security``); ``False`` for plain
        TCP, which lets every user of this machine run code as you.
    **kwargs
        Passed to :class:`distributed.deploy.SpecCluster`.

    Examples
    --------
    >>> from scalable import LocalCluster, ScalableClient
    >>> cluster = LocalCluster()                                   # doctest: +SKIP
    >>> cluster.add_container(tag="fast", cpus=1, memory="1G")  # doctest: +SKIP
    >>> cluster.add_workers(n=2, tag="fast")  # doctest: +SKIP
    >>> ScalableClient(cluster).submit(sum, [1, 2], tag="fast").result()  # doctest: +SKIP
    3
    """

    kind = "local"
    require_image = False

    def __init__(
        self,
        work_dir=None,
        runtime=None,
        death_timeout=None,
        silence_logs="error",
        dashboard_address=None,
        name=None,
        security=None,
        *,
        nanny=None,
        **kwargs,
    ):
        self._init_tags(work_dir, runtime)
        self.nanny = self._check_nanny(config.get("local.nanny", nanny))
        self.death_timeout = config.get("local.death-timeout", death_timeout)
        self._init_security(security, "every user of this machine")
        tls = self._tls and self._tls.security
        scheduler = {
            "cls": ScalableScheduler,
            "options": {
                "host": "127.0.0.1",
                "port": 0,
                "protocol": "tls" if tls else "tcp",
                "security": tls,
                "dashboard_address": config.get("local.dashboard-address", dashboard_address),
                "dashboard_prefix": self.dashboard_prefix,
            },
        }
        try:
            super().__init__(
                scheduler=scheduler,
                silence_logs=silence_logs,
                security=tls,
                name=name or self._default_name(),
                **kwargs,
            )
        except BaseException:
            self._close_security()
            raise

    async def _start(self):
        await super()._start()
        await self._after_start()

    async def _close(self):
        await self._before_close()
        await super()._close()
        self._close_security()

    def _worker_spec(self, tag, name) -> dict:
        spec = self.containers[tag]
        nanny = self._nanny_of(tag)
        tls = self._tls
        worker_args = [
            "--host",
            "127.0.0.1",
            "--nthreads",
            str(spec.cpus),
            "--memory-limit",
            str(spec.memory),
            "--resources",
            f"{tag}=1",
            "--death-timeout",
            str(self.death_timeout),
            "--no-dashboard",
            "--dashboard-address",
            "127.0.0.1:0",
            *(["--preload", spec.preload] if spec.preload else []),
            *(tls.worker_args() if tls is not None else ()),
            *(() if nanny else ("--no-nanny",)),
        ]
        if spec.image is None and not nanny:
            # its own process all the same: a worker inside this one would share the GIL
            # and the environment with the scheduler and the client
            argv = [sys.executable, "-m", "distributed.cli.dask_worker", *worker_args]
            return {
                "cls": ContainerWorker,
                "options": {
                    "argv": argv,
                    "cwd": self.work_dir,
                    "env": {**spec.env, **security.WORKER_HTTP_ENV},
                },
            }
        if spec.image is None:
            return {
                "cls": Nanny,
                "options": {
                    "nthreads": spec.cpus,
                    "memory_limit": spec.memory,
                    "resources": {tag: 1},
                    "death_timeout": self.death_timeout,
                    "env": dict(spec.env),
                    "host": "127.0.0.1",
                    "security": self.security,
                    # the worker's HTTP server answers nothing (see scalable.security)
                    "dashboard": False,
                    "config": security.WORKER_HTTP_CONFIG,
                    "dashboard_address": "127.0.0.1:0",
                    "silence_logs": logging.ERROR,
                    "preload": [spec.preload] if spec.preload else [],
                },
            }
        python = config.get("container.python")
        binds = dict(spec.dirs)
        if tls is not None and tls.directory:
            binds[tls.directory] = tls.directory  # the worker reads its credentials there
        argv = self.runtime.exec_argv(
            spec.image,
            [*versions.worker_python(python), "-m", "distributed.cli.dask_worker", *worker_args],
            binds=binds,
            env={**spec.env, **security.WORKER_HTTP_ENV},
            home=self.work_dir,
            cwd=self.work_dir,
        )
        return {"cls": ContainerWorker, "options": {"argv": argv, "cwd": self.work_dir}}

    async def _jobs_async(self, fresh=False) -> list:
        connected = {str(ws.name) for ws in self.scheduler.workers.values()}
        jobs = []
        for name, worker in self.workers.items():
            pid = getattr(getattr(worker, "proc", None), "pid", None) or getattr(
                worker, "pid", None
            )
            jobs.append(
                {
                    "job_id": str(pid or name),
                    "worker": name,
                    "tag": str(name).split("-", 1)[0],
                    "state": "RUNNING" if str(name) in connected else "PENDING",
                    "reason": "",
                    "node": "localhost",
                }
            )
        return jobs

    def _start_refusal(self, worker):
        spec = self.containers.get(self.tag_of(worker.name))
        tail = "".join(getattr(worker, "tail", ()))
        return versions.refusal(tail, spec.tag, spec.image) if spec else None

    def logs(self, tag=None, lines=50) -> dict:
        """Local workers log to this process's stderr; nothing is kept per worker."""
        self._check_tag(tag)
        return {}
