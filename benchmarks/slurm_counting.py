"""Support for ``scale_bench.py``: a private Slurm, and Slurm commands counted through PATH shims.

:class:`CommandCounter` writes tiny ``sbatch``/``squeue``/``scancel`` wrappers into a directory
and puts it first on ``PATH``: every call (from scalable, from dask-jobqueue, from anything in
this process's children) appends one line to a count file, then execs the real program. Counting
at the command line, not inside either library, measures both the same way.

Examples
--------
>>> counter = CommandCounter(tmpdir).install()           # doctest: +SKIP
>>> before = counter.snapshot()                          # doctest: +SKIP
>>> ...                                                  # doctest: +SKIP
>>> counter.since(before)                                # doctest: +SKIP
{'sbatch': 1, 'squeue': 0, 'scancel': 0}
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
COUNTED = ("sbatch", "squeue", "scancel")


class CommandCounter:
    """PATH shims that count Slurm commands, then run the real ones.

    Parameters
    ----------
    directory : str
        Where the shims and the count file go.
    """

    def __init__(self, directory):
        self.bin = Path(directory, "shims")
        self.log = Path(directory, "slurm-commands.log")
        self.real = {}  # program -> the real one, for the benchmark's own uncounted queries

    def install(self) -> CommandCounter:
        self.bin.mkdir(parents=True, exist_ok=True)
        self.log.touch()
        for prog in COUNTED:
            real = shutil.which(prog)
            if real is None:
                raise SystemExit(f"{prog} is not on PATH: apt-get install slurm-wlm")
            self.real[prog] = real
            shim = self.bin / prog
            # O_APPEND writes of one short line are atomic: concurrent calls never mix lines
            shim.write_text(
                "#!/bin/sh\n"
                f"echo {prog} >> {shlex.quote(str(self.log))}\n"
                f'exec {shlex.quote(real)} "$@"\n'
            )
            shim.chmod(0o755)
        os.environ["PATH"] = f"{self.bin}{os.pathsep}{os.environ['PATH']}"
        return self

    def snapshot(self) -> int:
        """Lines logged so far (pass to :meth:`since`)."""
        with open(self.log) as f:
            return sum(1 for _ in f)

    def since(self, mark: int) -> dict:
        """Commands logged after ``mark``, by program."""
        with open(self.log) as f:
            lines = [line.strip() for line in f][mark:]
        counts = Counter(lines)
        return {prog: counts.get(prog, 0) for prog in COUNTED}


def start_slurm(directory, nodes, cpus, memory_mb):
    """A private Slurm (tests/slurm_harness.py) whose nodes claim ``cpus`` each."""
    sys.path.insert(0, str(TESTS))
    from slurm_harness import SlurmTestCluster

    if os.geteuid() != 0:
        raise SystemExit("the benchmark starts Slurm's daemons and needs root.")
    slurm = SlurmTestCluster(
        n_nodes=nodes, cpus=cpus, memory=memory_mb, directory=os.path.join(directory, "slurm")
    ).start()
    os.environ["SLURM_CONF"] = slurm.conf
    return slurm


def use_apptainer_standin():
    """The bubblewrap apptainer stand-in of tests/bin, first on PATH (jobs inherit PATH)."""
    os.environ["PATH"] = f"{TESTS / 'bin'}{os.pathsep}{os.environ['PATH']}"


def wait_no_jobs(slurm, prefix, timeout=60.0):
    """Wait until no job whose name starts with ``prefix`` is left (workers gone, CPUs free)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [j for j in slurm.squeue("--array") if j["name"].startswith(prefix)]
        if not left:
            return
        time.sleep(0.2)
    raise TimeoutError(f"jobs {prefix}* still queued {timeout}s after close")
