"""Process bookkeeping for the test Slurm harness (tests/slurm_harness.py): munge, leftovers.

Finds the processes that belong to one harness directory, whatever became of their parents,
so that stopping a cluster (or cleaning up after a killed session) leaves nothing behind.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

#: Environment marker put on every daemon the harness starts, inherited by slurmstepd.
MARKER = "SCALABLE_SLURM_HARNESS"
#: Prefix of every harness directory (the stale-cluster sweep looks for it).
DIR_PREFIX = "scalable-slurm-"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def parent_death_signal():
    # Daemons owned by a test session die with it, even when it is killed with SIGKILL.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def child_map() -> dict[int, list[int]]:
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                children.setdefault(int(stat.rsplit(") ", 1)[1].split()[1]), []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    return children


def ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return pids


def with_descendants(roots) -> list[int]:
    # Never ourselves or a shell above us (it may have exported SLURM_CONF).
    children, found, todo, mine = child_map(), set(), list(roots), ancestors()
    while todo:
        pid = todo.pop()
        if pid not in found and pid not in mine:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return sorted(found)


def processes_of(directory: str) -> list[int]:
    """Processes of the cluster in ``directory``, with their descendants.

    That is: the daemons and slurmstepd (they carry our marker) and job processes submitted
    with this cluster's ``SLURM_CONF`` in their environment, even if they left the job's tree.
    """
    needles = {
        f"{MARKER}={directory}".encode(),
        f"SLURM_CONF={os.path.join(directory, 'slurm.conf')}".encode(),
    }
    marked = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if needles & set(Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")):
                    marked.append(int(entry))
            except OSError:
                continue
    return with_descendants(marked)


def node_processes(directory: str, node: str, job_ids) -> list[int]:
    """slurmstepd of the given jobs and every job process of ``node``, with descendants."""
    tags = tuple(f"[{i}." for i in job_ids)
    steps = []
    for pid in processes_of(directory):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_text()
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if (
            cmdline.startswith("slurmstepd") and any(t in cmdline for t in tags)
        ) or f"SLURMD_NODENAME={node}".encode() in env:
            steps.append(pid)
    return with_descendants(steps)


def kill_all(pids, sig=signal.SIGKILL, wait=5.0):
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.05)


def ensure_munge() -> None:
    """Start the machine's shared ``munged`` unless one already answers.

    A file lock serialises concurrent test sessions so only one of them starts it.
    """
    with open(os.path.join(tempfile.gettempdir(), "scalable-munge.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if subprocess.run(["munge", "-n"], capture_output=True).returncode == 0:
            return
        if not os.path.exists("/etc/munge/munge.key"):
            subprocess.run(["mungekey", "--create"], check=True, capture_output=True)
            shutil.chown("/etc/munge/munge.key", "munge", "munge")
        for d in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
            os.makedirs(d, exist_ok=True)
            shutil.chown(d, "munge", "munge")
        # munged refuses to run as root; it daemonises itself, outliving every test session.
        subprocess.run(
            ["runuser", "-u", "munge", "--", "munged", "--force"],
            check=True,
            capture_output=True,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while subprocess.run(["munge", "-n"], capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                raise RuntimeError("munged did not start: see /var/log/munge/munged.log")
            time.sleep(0.1)


def sweep_stale(parent: str | None = None) -> list[str]:
    """Remove harness directories whose owning test session died without stopping them.

    Returns the directories removed. Clusters started from the command line have no owner and
    are left alone.
    """
    parent = parent or tempfile.gettempdir()
    removed = []
    for d in Path(parent).glob(DIR_PREFIX + "*"):
        try:
            owner = int((d / "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        if owner and not pid_alive(owner):
            kill_all(processes_of(str(d)))
            shutil.rmtree(d, ignore_errors=True)
            removed.append(str(d))
    return removed


def reap(directory: str, owner: int) -> int:
    """Wait for the owning session to end; if it left its cluster behind, remove it."""
    while os.path.isdir(directory):
        if not pid_alive(owner):
            time.sleep(0.5)  # let a normal stop in progress finish first
            if os.path.isdir(directory):
                kill_all(processes_of(directory))
                shutil.rmtree(directory, ignore_errors=True)
            break
        time.sleep(0.5)
    return 0
