"""``scalable jobs`` and ``scalable cleanup``: the Slurm jobs of this work directory's clusters."""

from __future__ import annotations

import os

from . import records


def _jobs(args) -> int:
    recs = records.read_all(args.work_dir)
    jobs = records.jobs_of(recs, args.work_dir)
    if not jobs:
        print(f"no jobs of scalable clusters from {args.work_dir}")
        return 0
    print(f"{'JOBID':<14} {'CLUSTER':<11} {'STATE':<11} {'NODE':<10} NAME / REASON")
    for j in jobs:
        life = {True: "", False: " (cluster dead)", None: " (other host)"}[j["alive"]]
        print(
            f"{j['job_id']:<14} {j['cluster']:<11} {j['state']:<11} {j['node'] or '-':<10} "
            f"{j['name']} {j['reason']}{life}"
        )
    return 0


def _cleanup(args) -> int:
    keys = records.stale_keys(args.work_dir, remove=True)
    jobs = records.cleanup(args.work_dir)
    if jobs:
        print(
            f"cancelled {len(jobs)} job(s) of dead scalable clusters: "
            + " ".join(j["job_id"] for j in jobs)
        )
    elif not keys:
        print("nothing to clean up: no jobs of dead scalable clusters")
    for path in keys:
        print(f"removed the TLS keys of a dead scalable cluster: {path}")
    return 0


def register(subparsers):
    for name, func, text in (
        ("jobs", _jobs, "list the Slurm jobs of scalable clusters of a work directory"),
        (
            "cleanup",
            _cleanup,
            "cancel the jobs of dead scalable clusters (never other jobs), remove their keys",
        ),
    ):
        p = subparsers.add_parser(name, help=text, description=text)
        p.add_argument(
            "--work-dir", default=os.getcwd(), help="the work directory (default: the current one)"
        )
        p.set_defaults(func=func)
