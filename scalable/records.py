"""Cluster records: which scalable clusters ran in a work directory, so their jobs can be found.

Every :class:`~scalable.slurm.SlurmCluster` writes ``<work_dir>/.scalable/clusters/<id>.json``
(its id, host, pid and job-name prefix) when it starts and removes it when it closes. A record
whose process is gone marks a dead cluster: ``scalable jobs`` lists the jobs of every recorded
cluster, ``scalable cleanup`` cancels those of dead ones only, and never another job of the user.

Records are read through :mod:`scalable.trust` (a regular file of this user, named after its
id, in a directory only this user can write); a cluster is dead only when its host is this one
and its pid is gone or now belongs to a process that started later; a job belongs to a record
only when its name is ``sc-<id>-<tag>`` and it was submitted from this work directory.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import time

from . import runner, security, trust
from .containers import TAG_RE

logger = logging.getLogger(__name__)

RECORD_DIR = os.path.join(".scalable", "clusters")


def parse_squeue(stdout: str, fields) -> list:
    r"""Rows of ``squeue --noheader --format=%a|%b|...`` as dicts keyed by ``fields``.

    Examples
    --------
    >>> parse_squeue("12_0|RUNNING\n", ("job_id", "state"))
    [{'job_id': '12_0', 'state': 'RUNNING'}]
    """
    rows = []
    for line in stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == len(fields):
            rows.append(dict(zip(fields, parts)))
    return rows


def record_dir(work_dir: str) -> str:
    return os.path.join(work_dir, RECORD_DIR)


def job_prefix(cluster_id: str) -> str:
    """Every job of a cluster is named ``sc-<cluster id>-<tag>``."""
    return f"sc-{cluster_id}-"


def job_name(cluster_id: str, tag: str) -> str:
    """The Slurm job name of a tag's workers: the one place the protocol is spelled.

    Examples
    --------
    >>> job_name("3f2a", "gcam"), job_tag(job_name("3f2a", "gcam"))
    ('sc-3f2a-gcam', 'gcam')
    """
    return f"{job_prefix(cluster_id)}{tag}"


def job_tag(name: str) -> str:
    """The tag in a job name made by :func:`job_name` (tags have no dash)."""
    return name.rsplit("-", 1)[-1]


def write(work_dir: str, cluster_id: str, **extra) -> str:
    """Record this process's cluster ``cluster_id`` (0600, through no link); return the path."""
    folder = trust.make_private_dir(record_dir(work_dir))
    record = {
        "id": cluster_id,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_start": process_start(os.getpid()),
        "pidns": pid_namespace(),
        "created": time.time(),
        **extra,
    }
    return trust.write_json(folder, cluster_id, record)


def remove(work_dir: str, cluster_id: str) -> None:
    trust.remove(record_dir(work_dir), cluster_id)


def _well_formed(record: dict) -> bool:
    pid = record.get("pid")
    return (
        isinstance(pid, int)
        and not isinstance(pid, bool)
        and pid > 0
        and isinstance(record.get("host"), str)
        and isinstance(record.get("pid_start"), (int, type(None)))
    )


def read_all(work_dir: str) -> list:
    """The trusted, well-formed records of ``work_dir``; each other file gets a warning."""
    found, refused = trust.read_all(record_dir(work_dir))
    out = []
    for record in found:
        if _well_formed(record):
            out.append(record)
        else:
            refused.append(
                f"{record_dir(work_dir)}/{record['id']}.json lacks a valid host or pid: ignored"
            )
    for why in refused:
        logger.warning("cluster record: %s", why)
    return out


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), ``None`` if unknown or gone.

    With the pid it names one process for good: a pid reused later has a later start.

    Examples
    --------
    >>> process_start(os.getpid()) == process_start(os.getpid())
    True
    """
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as f:
            stat = f.read()
        # the command name (field 2) may hold spaces and parentheses: count after the last ')'
        return int(stat[stat.rindex(b")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int, start: int | None = None) -> bool:
    """Whether process ``pid`` runs and, when ``start`` is given, is the one that started then."""
    try:
        os.kill(pid, 0)
    except OSError as e:
        if e.errno != errno.EPERM:  # EPERM: it exists, owned by someone else
            return False
    except (OverflowError, ValueError):
        return False
    return start is None or process_start(pid) in (start, None)


def pid_namespace() -> str | None:
    """This process's pid namespace (pids of other namespaces cannot be checked from here)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


def is_alive(record: dict) -> bool | None:
    """True/False for a record of this host; None when it was written on another host."""
    if record.get("host") != socket.gethostname() or record.get("pidns") != pid_namespace():
        return None  # another machine, or another container's process ids: cannot tell
    return pid_alive(record["pid"], record.get("pid_start"))


def _same_dir(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def jobs_of(records: list, work_dir: str) -> list:
    """Slurm jobs of the recorded clusters (one ``squeue`` for all), each with its record.

    A job is a cluster's only if its name is ``sc-<id>-<tag>`` and it was submitted from
    ``work_dir`` (every scalable job is): a record naming someone else's id finds nothing.
    """
    if not records:
        return []
    result = runner.run(
        ["squeue", "--me", "--noheader", "--array", "--format=%i|%j|%T|%r|%N|%Z"], timeout=60
    )
    by_id = {r["id"]: r for r in records}
    jobs = []
    for job in parse_squeue(result.stdout, ("job_id", "name", "state", "reason", "node", "dir")):
        cluster_id, _, tag = job["name"][len("sc-") :].rpartition("-")
        r = by_id.get(cluster_id) if job["name"].startswith("sc-") else None
        if r is None or not TAG_RE.fullmatch(tag) or not _same_dir(job.pop("dir"), work_dir):
            continue
        jobs.append({**job, "cluster": r["id"], "alive": is_alive(r)})
    return jobs


def leftovers(work_dir: str, exclude: str | None = None) -> list:
    """Jobs still in Slurm from dead clusters of this work directory."""
    dead = [r for r in read_all(work_dir) if r["id"] != exclude and is_alive(r) is False]
    return jobs_of(dead, work_dir) if dead else []


def stale_keys(work_dir: str, exclude: str | None = None, remove: bool = False) -> list:
    """Private TLS directories that dead clusters of this work directory left (a process
    killed with SIGKILL removes nothing); with ``remove``, removed. Returns their paths."""
    dead = {r["id"] for r in read_all(work_dir) if r["id"] != exclude and is_alive(r) is False}
    return security.stale_tls_dirs(work_dir, dead, remove=remove) if dead else []


def leftover_warnings(work_dir: str, exclude: str | None = None) -> list[str]:
    """Sentences about what dead clusters of this work directory left: queued jobs, TLS keys.

    A hint only: a failure to look is logged, never raised, so no start fails for it.
    """
    said = []
    try:
        jobs = leftovers(work_dir, exclude)
        keys = stale_keys(work_dir, exclude)
    except Exception as e:  # noqa: BLE001
        logger.debug("leftover check failed: %s", e)
        return said
    if jobs:
        clusters = ", ".join(sorted({j["cluster"] for j in jobs}))
        said.append(
            f"{len(jobs)} Slurm job(s) of scalable clusters that are no longer running "
            f"({clusters}) are still queued from {work_dir}: run `scalable cleanup` there to "
            f"cancel them (it touches no other job)."
        )
    if keys:
        said.append(
            f"{len(keys)} TLS key director(ies) of scalable clusters that are no longer "
            f"running remain in {os.path.dirname(keys[0])}: run `scalable cleanup` in "
            f"{work_dir} to remove them."
        )
    return said


def cleanup(work_dir: str) -> list:
    """Cancel the jobs of dead clusters (one ``scancel``), remove their keys (see
    :func:`stale_keys`) and drop their records."""
    dead = [r for r in read_all(work_dir) if is_alive(r) is False]
    jobs = jobs_of(dead, work_dir)
    if jobs:
        runner.run(["scancel", *sorted({j["job_id"] for j in jobs})], timeout=60)
    # a record goes only once none of its jobs is left: until then cleanup must find them
    remaining = (
        {
            j["cluster"]
            for j in jobs_of(dead, work_dir)
            if j["state"] not in ("CANCELLED", "COMPLETING", "COMPLETED")
        }
        if jobs
        else set()
    )
    gone = [r["id"] for r in dead if r["id"] not in remaining]
    # keys before records: without its record, a directory's cluster cannot be judged dead
    security.stale_tls_dirs(work_dir, gone, remove=True)
    for ident in gone:
        remove(work_dir, ident)
    return jobs
