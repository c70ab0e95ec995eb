"""A Slurm worker job's log: where Slurm writes it, its last lines, whether Slurm ended the job.

Job logs sit in the cluster's log directory, which other users may be able to write: a FIFO or
anything else planted at a log's name counts as no log, and is never opened in a way that could
block the scheduler's event loop.

Examples
--------
>>> tail("/nonexistent/sc-1-gcam-7.log")
'(no log yet: the job has not started)'
>>> ended_outside("/nonexistent/sc-1-gcam-7.log")
True
"""

from __future__ import annotations

import errno
import os
import re
import stat

from .records import job_name

#: what slurmstepd writes into a job's output when Slurm ends the job from outside
_SLURM_ENDED = re.compile(r"\*\*\* JOB \S+ ON \S+ CANCELLED AT ")


def _regular_file(path, flags):
    fd = os.open(path, flags | os.O_NONBLOCK)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise FileNotFoundError(errno.ENOENT, "not a regular file", path)
    return fd


def path(log_directory: str, cluster_id: str, job) -> str:
    """The log of ``job`` (a ``TaggedSlurmJob`` with its ``job_id``), as the job script names it."""
    # the names the "-o %x-%A_%a.log" directive (array tasks) or "%x-%j.log" (jobs) gives
    base, _, task = job.job_id.partition("_")
    stem = f"{job_name(cluster_id, job.tag)}-{base}"
    return os.path.join(log_directory, f"{stem}_{task}.log" if task else f"{stem}.log")


def open_log(log_path: str, mode="r", **kwargs):
    """Open a job log without blocking; anything but a regular file is :class:`FileNotFoundError`."""
    return open(log_path, mode, opener=_regular_file, **kwargs)


def tail(log_path: str, lines: int = 50) -> str:
    """The last ``lines`` lines of the log, or a sentence saying there is none yet."""
    try:
        with open_log(log_path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except FileNotFoundError:
        return "(no log yet: the job has not started)"


def ended_outside(log_path: str) -> bool:
    """Whether Slurm, not the worker, ended the job (or it never ran)."""
    # Slurm creates the output file when the job starts: none means it never ran. When
    # Slurm itself ends a running job (scancel, time limit, preemption, node failure),
    # slurmstepd writes "*** JOB <id> ON <node> CANCELLED AT <time> [DUE TO ...] ***" there.
    try:
        with open_log(log_path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 8192))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return True
    return _SLURM_ENDED.search(text) is not None
