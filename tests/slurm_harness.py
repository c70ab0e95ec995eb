"""A real, private Slurm cluster on this machine, for tests and benchmarks.

:class:`SlurmTestCluster` starts one ``slurmctld`` and several ``slurmd -N cnX`` on loopback, all
configured from a ``slurm.conf`` written into one temporary directory (state, spool, logs, pid
files). Ports are chosen free and the ``ClusterName`` is unique, so several test sessions can run
side by side on one machine. ``munged`` is shared by all clusters: it is started once if it is
not already running, and never stopped here.

Runs as root (Slurm's daemons need it). Used by the ``slurm`` fixture of ``tests/conftest.py``;
benchmarks reuse it through the command line::

    SLURM_CONF=$(python tests/slurm_harness.py start --dir /tmp/bench-slurm)
    ...
    python tests/slurm_harness.py stop --dir /tmp/bench-slurm

Examples
--------
>>> with SlurmTestCluster() as slurm:                                   # doctest: +SKIP
...     slurm.sbatch("--output=/dev/null", "--wrap", "sleep 5")
...     subprocess.run(["squeue"], env={**os.environ, **slurm.env})
...     slurm.squeue()
'1'
[{'job_id': '1', 'state': 'RUNNING', 'reason': 'None', 'node': 'cn1', 'partition': 'slurm',
  'comment': '(null)', 'name': 'wrap'}]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from harness_procs import (
    DIR_PREFIX,
    MARKER,
    ensure_munge,
    kill_all,
    node_processes,
    parent_death_signal,
    pid_alive,
    processes_of,
    reap,
    sweep_stale,
)

SQUEUE_FIELDS = ("job_id", "state", "reason", "node", "partition", "comment", "name")
SQUEUE_FORMAT = "%i|%T|%r|%N|%P|%k|%j"

#: slurm.conf with {placeholders} filled in by SlurmTestCluster._write_conf.
CONF_TEMPLATE = Path(__file__).with_name("slurm.conf.template")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DaemonExited(RuntimeError):
    """A Slurm daemon of the test cluster exited while we waited for it."""


class SlurmTestCluster:
    """A private Slurm cluster (one controller, ``n_nodes`` compute nodes) on loopback.

    Parameters
    ----------
    n_nodes : int
        Compute nodes ``cn1..cnN``, each a ``slurmd -N cnX`` on its own port.
    cpus, memory : int
        What every node claims (CPUs, RealMemory in MB); more than the machine has is fine.
    directory : str, optional
        Where to put everything; default a fresh temporary directory. Removed on :meth:`stop`.
    extra_conf : str
        Lines appended to ``slurm.conf`` (e.g. ``"JobRequeue=1"``; a later line wins).
    owned : bool
        True (default) ties the daemons to this process: they die with it, and :meth:`stop` runs
        at exit. False (the command line) leaves them running until ``stop``.

    Attributes
    ----------
    conf : str
        Path of the ``slurm.conf``.
    env : dict
        ``{"SLURM_CONF": conf}``: merge into a subprocess environment to talk to this cluster.
    cluster_name, nodes, partitions, directory

    Examples
    --------
    >>> slurm = SlurmTestCluster(n_nodes=2).start()                      # doctest: +SKIP
    >>> slurm.sinfo()                                                    # doctest: +SKIP
    {'cn1': 'idle', 'cn2': 'idle'}
    >>> slurm.stop()                                                     # doctest: +SKIP
    """

    partitions = ("slurm", "debug")

    def __init__(self, n_nodes=3, cpus=20, memory=64000, directory=None, owned=True, extra_conf=""):
        self.extra_conf = extra_conf
        self.n_nodes, self.cpus, self.memory, self.owned = n_nodes, cpus, memory, owned
        self.nodes = [f"cn{i}" for i in range(1, n_nodes + 1)]
        self.directory = directory
        self.cluster_name = "t" + uuid.uuid4().hex[:10]
        self.host = socket.gethostname().split(".")[0]
        self.conf = None
        self._procs: dict[str, subprocess.Popen] = {}
        self._pids: dict[str, int] = {}
        self.startup_seconds = None

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def env(self) -> dict:
        return {"SLURM_CONF": self.conf}

    def start(self, timeout=60.0) -> SlurmTestCluster:
        """Start munge (if needed), the controller and the nodes; return once all nodes are idle."""
        t0 = time.monotonic()
        sweep_stale()
        ensure_munge()
        if self.directory is None:
            self.directory = tempfile.mkdtemp(prefix=DIR_PREFIX)
        else:
            os.makedirs(self.directory, exist_ok=True)
        self.directory = os.path.abspath(self.directory)
        d = Path(self.directory)
        for sub in ("state", "spool", "run", "log"):
            (d / sub).mkdir(exist_ok=True)
        (d / "owner.pid").write_text(str(os.getpid() if self.owned else 0))
        if self.owned:
            atexit.register(self.stop)
            self._start_reaper()
        self.conf = str(d / "slurm.conf")
        try:
            for attempt in (1, 2):
                self._write_conf()
                self._spawn("slurmctld", ["slurmctld", "-D", "-i"])
                for n in self.nodes:
                    self._spawn(n, ["slurmd", "-D", "-N", n])
                self._save()
                try:
                    self.wait_idle(self.nodes, timeout=timeout)
                    break
                except DaemonExited:
                    # Most likely another process took a port between our pick and the bind.
                    kill_all([p.pid for p in self._procs.values()])
                    if attempt == 2:
                        raise
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _write_conf(self) -> None:
        ports = {n: _free_port() for n in ["ctld", *self.nodes]}
        nodes = "\n".join(
            f"NodeName={n} NodeHostname={self.host} NodeAddr=127.0.0.1 Port={ports[n]} "
            f"CPUs={self.cpus} RealMemory={self.memory} State=UNKNOWN"
            for n in self.nodes
        )
        Path(self.conf).write_text(
            CONF_TEMPLATE.read_text().format(
                cluster_name=self.cluster_name,
                host=self.host,
                ctld_port=ports["ctld"],
                dir=self.directory,
                nodes=nodes,
                node_list=",".join(self.nodes),
                extra=self.extra_conf,
            )
        )

    def _start_reaper(self) -> None:
        # atexit and the daemons' parent-death signal do not cover slurmstepd and the jobs when
        # the session is killed outright: a small detached process cleans up after it.
        env = {k: v for k, v in os.environ.items() if k not in (MARKER, "SLURM_CONF")}
        subprocess.Popen(
            [
                sys.executable,
                os.path.abspath(__file__),
                "_reap",
                "--dir",
                self.directory,
                "--owner",
                str(os.getpid()),
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _spawn(self, name: str, argv: list[str]) -> None:
        env = {**os.environ, "SLURM_CONF": self.conf, MARKER: self.directory}
        log = open(os.path.join(self.directory, "log", f"{name}.out"), "ab")
        # pdeathsig follows the forking *thread*; only tie the daemons to the main thread.
        tie = self.owned and threading.current_thread() is threading.main_thread()
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            preexec_fn=parent_death_signal if tie else None,
        )
        log.close()
        self._procs[name] = proc
        self._pids[name] = proc.pid

    def _save(self) -> None:
        Path(self.directory, "harness.json").write_text(
            json.dumps(
                {
                    "conf": self.conf,
                    "cluster_name": self.cluster_name,
                    "nodes": self.nodes,
                    "pids": self._pids,
                }
            )
        )

    @classmethod
    def attach(cls, directory: str) -> SlurmTestCluster:
        """The cluster already running in ``directory`` (started by the command line)."""
        directory = os.path.abspath(directory)
        state = json.loads(Path(directory, "harness.json").read_text())
        self = cls(n_nodes=len(state["nodes"]), directory=directory, owned=False)
        self.conf, self.cluster_name = state["conf"], state["cluster_name"]
        self._pids = {k: int(v) for k, v in state["pids"].items()}
        return self

    def stop(self) -> None:
        """Cancel every job, stop the daemons, kill leftovers, remove the directory."""
        if self.directory is None or not os.path.isdir(self.directory):
            return
        if self._pid_alive_named("slurmctld"):
            try:
                self.cancel_all(timeout=5)
            except (subprocess.SubprocessError, OSError, TimeoutError):
                pass  # the daemons are killed below anyway
        pids = [p for p in self._pids.values() if pid_alive(p)]
        kill_all(pids, signal.SIGTERM, wait=5)
        kill_all(processes_of(self.directory))  # SIGKILL: slurmstepd, job processes, stragglers
        for proc in self._procs.values():
            try:
                proc.wait(timeout=1)  # reap our children: no zombies left behind
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self.directory, ignore_errors=True)
        try:
            atexit.unregister(self.stop)
        except Exception:
            pass

    def __enter__(self):
        return self.start() if self.conf is None else self

    def __exit__(self, *exc):
        self.stop()

    # -- commands ----------------------------------------------------------------------------
    def run(self, argv, check=True, timeout=30, **kw) -> subprocess.CompletedProcess:
        """Run a Slurm command (argv list) against this cluster; text output captured."""
        return subprocess.run(
            argv,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            **kw,
        )

    def squeue(self, *args: str) -> list[dict]:
        """Jobs as dicts with keys ``job_id, state, reason, node, partition, comment, name``.

        Extra ``args`` are passed to squeue, e.g. ``slurm.squeue("--states=all")``. Array tasks
        appear as ``"<id>_<task>"`` (pending ones may be folded as ``"<id>_[0-3]"``; add
        ``"--array"`` to unfold them).
        """
        out = self.run(["squeue", "--noheader", f"--format={SQUEUE_FORMAT}", *args]).stdout
        return [
            dict(zip(SQUEUE_FIELDS, line.split("|", len(SQUEUE_FIELDS) - 1)))
            for line in out.splitlines()
            if line.strip()
        ]

    def sbatch(self, *args: str) -> str:
        """Submit with ``sbatch --parsable *args``; return the job id.

        Examples
        --------
        >>> job = slurm.sbatch("--output=/dev/null", "--wrap", "sleep 1")      # doctest: +SKIP
        """
        return self.run(["sbatch", "--parsable", *args]).stdout.strip().split(";")[0]

    def cancel_all(self, timeout=10.0) -> int:
        """Cancel every job of this cluster and wait until the queue is empty; return how many."""
        ids = {j["job_id"].split("_")[0] for j in self.squeue()}
        if ids:
            self.run(["scancel", *sorted(ids)], check=False)
        deadline = time.monotonic() + timeout
        while self.squeue():
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs still queued {timeout}s after scancel: {self.squeue()}")
            time.sleep(0.2)
        return len(ids)

    def sinfo(self) -> dict[str, str]:
        """Node name -> state as sinfo shows it (``idle``, ``alloc``, ``mix``, ``down*``, ...)."""
        out = self.run(["sinfo", "--noheader", "--Node", "--format=%N %t"], check=False).stdout
        states = {}
        for line in out.splitlines():
            if line.split():
                name, state = line.split()
                states[name] = state
        return states

    def wait_idle(self, nodes=None, timeout=30.0) -> None:
        """Wait until every one of ``nodes`` (default all) is idle (or allocated: usable)."""
        nodes = nodes or self.nodes
        deadline = time.monotonic() + timeout
        while True:
            for name, proc in self._procs.items():
                if proc.poll() is not None and name in ("slurmctld", *nodes):
                    raise DaemonExited(
                        f"{name} exited with {proc.returncode}:\n" + self._log_tail(name)
                    )
            states = self.sinfo()
            if all(
                states.get(n, "").rstrip("*~#") in ("idle", "mix", "alloc")
                and not states[n].endswith("*")
                for n in nodes
            ):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nodes not idle after {timeout}s: {states}\n" + self._log_tail("slurmctld")
                )
            time.sleep(0.1)

    def _log_tail(self, name: str, chars=2000) -> str:
        log = Path(
            self.directory, "log", "slurmctld.log" if name == "slurmctld" else f"slurmd-{name}.log"
        )
        return log.read_text()[-chars:] if log.exists() else f"(no log at {log})"

    def _pid_alive_named(self, name: str) -> bool:
        return name in self._pids and pid_alive(self._pids[name])

    # -- failures ----------------------------------------------------------------------------
    def stop_node(self, node: str, kill_jobs=True, mark_down=True) -> None:
        """Make ``node`` fail: SIGKILL its slurmd (and, by default, the jobs running on it).

        ``mark_down`` tells the controller at once (as if ``SlurmdTimeout`` had passed), so jobs
        on the node end NODE_FAIL and it takes no new work.
        """
        pid = self._pids.get(node)
        victims = [pid] if pid and pid_alive(pid) else []
        if kill_jobs:
            victims += self._node_steps(node)
        kill_all(victims)
        if mark_down:
            self.run(
                [
                    "scontrol",
                    "update",
                    f"NodeName={node}",
                    "State=DOWN",
                    "Reason=stopped_by_test_harness",
                ],
                check=False,
            )

    def _node_steps(self, node: str) -> list[int]:
        ids = self.run(
            ["squeue", "--noheader", "--format=%A", f"--nodelist={node}"], check=False
        ).stdout.split()
        return node_processes(self.directory, node, ids)

    def start_node(self, node: str, timeout=30.0) -> None:
        """Restart ``node``'s slurmd and wait until it is usable again."""
        if self._pid_alive_named(node):
            return
        self._spawn(node, ["slurmd", "-D", "-N", node])
        self._save()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.sinfo().get(node, "")
            if state.startswith(("idle", "mix", "alloc")) and not state.endswith("*"):
                return
            if state.startswith(("down", "drain")) and not state.endswith("*"):
                # Registered but set DOWN by hand: ReturnToService does not lift that.
                self.run(["scontrol", "update", f"NodeName={node}", "State=RESUME"], check=False)
            time.sleep(0.2)
        raise TimeoutError(f"{node} did not come back: {self.sinfo()}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Start or stop a private test Slurm cluster.")
    parser.add_argument("action", choices=["start", "stop", "_reap"])
    parser.add_argument("--dir", required=True, help="directory holding the cluster")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--cpus", type=int, default=20)
    parser.add_argument("--memory", type=int, default=64000, help="MB per node")
    parser.add_argument("--owner", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.action == "_reap":
        return reap(args.dir, args.owner)
    if args.action == "start":
        slurm = SlurmTestCluster(args.nodes, args.cpus, args.memory, args.dir, owned=False)
        slurm.start()
        print(slurm.conf)
        print(f"started in {slurm.startup_seconds:.1f}s", file=sys.stderr)
    else:
        if not os.path.exists(os.path.join(args.dir, "harness.json")):
            print(f"no test cluster in {args.dir}", file=sys.stderr)
            return 1
        SlurmTestCluster.attach(args.dir).stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
