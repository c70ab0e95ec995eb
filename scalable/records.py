"""Cluster records: which scalable clusters ran in a work directory, so their jobs can be found.

Every :class:`~scalable.slurm.SlurmCluster` writes ``<work_dir>/.scalable/clusters/<id>.json``
(its id, host, pid and job-name prefix) when it starts and removes it when it closes. A record
whose process is gone marks a dead cluster: ``scalable jobs`` lists the jobs of every recorded
cluster, ``scalable cleanup`` cancels those of dead ones only, and never another job of the user.
"""

from __future__ import annotations

import json
import os
import socket
import time

from . import runner

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


def write(work_dir: str, cluster_id: str, **extra) -> str:
    folder = record_dir(work_dir)
    os.makedirs(folder, mode=0o700, exist_ok=True)
    path = os.path.join(folder, f"{cluster_id}.json")
    record = {"id": cluster_id, "host": socket.gethostname(), "pid": os.getpid(),
              "pidns": pid_namespace(), "created": time.time(), **extra}
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(record, f)
    os.replace(tmp, path)
    return path


def remove(work_dir: str, cluster_id: str) -> None:
    try:
        os.unlink(os.path.join(record_dir(work_dir), f"{cluster_id}.json"))
    except FileNotFoundError:
        pass


def read_all(work_dir: str) -> list:
    folder = record_dir(work_dir)
    out = []
    for fn in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        if fn.endswith(".json"):
            try:
                with open(os.path.join(folder, fn)) as f:
                    out.append(json.load(f))
            except (OSError, ValueError):
                continue
    return out


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
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def jobs_of(records: list) -> list:
    """Slurm jobs of the recorded clusters (one ``squeue`` for all), each with its record."""
    if not records:
        return []
    result = runner.run(["squeue", "--me", "--noheader", "--array",
                         "--format=%i|%j|%T|%r|%N"], timeout=60)
    by_prefix = {job_prefix(r["id"]): r for r in records}
    jobs = []
    for job in parse_squeue(result.stdout, ("job_id", "name", "state", "reason", "node")):
        r = by_prefix.get(job["name"][: job["name"].rfind("-") + 1])
        if r is not None:
            jobs.append({**job, "cluster": r["id"], "alive": is_alive(r)})
    return jobs


def leftovers(work_dir: str, exclude: str | None = None) -> list:
    """Jobs still in Slurm from dead clusters of this work directory."""
    dead = [r for r in read_all(work_dir) if r["id"] != exclude and is_alive(r) is False]
    return jobs_of(dead) if dead else []


def cleanup(work_dir: str) -> list:
    """Cancel the jobs of dead clusters (one ``scancel``) and drop their records."""
    dead = [r for r in read_all(work_dir) if is_alive(r) is False]
    jobs = jobs_of(dead)
    if jobs:
        runner.run(["scancel", *sorted({j["job_id"] for j in jobs})], timeout=60)
    # a record goes only once none of its jobs is left: until then cleanup must find them
    remaining = {j["cluster"] for j in jobs_of(dead)
                 if j["state"] not in ("CANCELLED", "COMPLETING", "COMPLETED")} if jobs else set()
    for r in dead:
        if r["id"] not in remaining:
            remove(work_dir, r["id"])
    return jobs
