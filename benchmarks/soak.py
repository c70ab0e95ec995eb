"""Soak test (not in CI): random worker kills and scaling under a stream of tagged tasks.

Starts a private Slurm (tests/slurm_harness.py) and a SlurmCluster with two tags through the
bubblewrap apptainer stand-in, then for ``--minutes`` keeps submitting small tasks while it
randomly ``scancel``s workers' jobs and rescales the tags. At the end it checks every result and
reports tasks submitted, completed, lost (goal: 0) and the cluster's jobs left after close
(goal: 0)::

    python benchmarks/soak.py --minutes 30
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))


def work(x):
    time.sleep(random.random() * 2)
    return x * x


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--in-flight", type=int, default=40, help="most unfinished tasks at any time (default 40)"
    )
    args = parser.parse_args(argv)
    random.seed(args.seed)

    import dask
    from distributed import wait

    from scalable import ScalableClient, SlurmCluster
    from scalable.runner import run
    from slurm_harness import SlurmTestCluster

    os.environ["PATH"] = os.path.join(HERE, "..", "tests", "bin") + os.pathsep + os.environ["PATH"]
    work_dir = tempfile.mkdtemp(prefix="scalable-soak-")
    os.makedirs(os.path.join(work_dir, "containers"))
    for tag in ("gcam", "stitches"):
        with open(os.path.join(work_dir, "containers", f"{tag}_container.sif"), "w") as f:
            f.write("stand-in image\n")

    submitted, kills, rescales = 0, 0, 0
    with SlurmTestCluster() as slurm, dask.config.set({"scalable.recovery.interval": "1s"}):
        os.environ["SLURM_CONF"] = slurm.conf
        cluster = SlurmCluster(queue="slurm", interface="lo", work_dir=work_dir)
        cluster.add_container(tag="gcam", cpus=1, memory="512M")
        cluster.add_container(tag="stitches", cpus=1, memory="512M")
        cluster.add_workers("gcam", 3)
        cluster.add_workers("stitches", 2)
        client = ScalableClient(cluster)
        deadline = time.monotonic() + args.minutes * 60
        pending = {}  # x -> future of work(x), until its result is fetched
        completed = lost = 0

        def harvest():
            # fetch results as they come, as a workflow does: a result left in a worker's
            # memory would be lost (and recomputed) with every killed worker
            nonlocal completed, lost
            for x, fut in list(pending.items()):
                if fut.done():
                    try:
                        ok = fut.result() == x * x
                    except Exception as e:  # noqa: BLE001 - a soak counts every kind of loss
                        print(f"task {x} lost: {e}", file=sys.stderr)
                        ok = False
                    completed += ok
                    lost += not ok
                    del pending[x]

        while time.monotonic() < deadline:
            harvest()
            tag = random.choice(["gcam", "stitches"])
            # a steady stream, not an ever-growing backlog: at most --in-flight unfinished
            # tasks, so the end of the run measures losses rather than queue length
            if len(pending) < args.in_flight:
                pending[submitted] = client.submit(work, submitted, tag=tag, pure=False)
                submitted += 1
            roll = random.random()
            if roll < 0.02:
                jobs = [j for j in cluster.workers.values() if getattr(j, "job_id", None)]
                if jobs:
                    run(["scancel", random.choice(jobs).job_id], check=False)
                    kills += 1
            elif roll < 0.03:
                cluster.scale_tag(tag, random.randint(1, 4))
                rescales += 1
            time.sleep(0.2)
        try:
            wait(list(pending.values()), timeout=900)
        except TimeoutError:
            pass  # what is still unfinished counts as lost below
        harvest()
        for x in pending:
            print(f"task {x} lost: unfinished 900 s after the stream stopped", file=sys.stderr)
        lost += len(pending)
        client.close()
        cluster.close()
        time.sleep(5)
        left = [
            j
            for j in slurm.squeue("--array")
            if j["name"].startswith(f"sc-{cluster.cluster_id}-")
            and j["state"] not in ("COMPLETING", "COMPLETED")
        ]
    print(
        "| minutes | tasks submitted | completed | lost (goal 0) | worker kills | rescales | "
        "jobs left after close (goal 0) |"
    )
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {args.minutes:g} | {submitted} | {completed} | {lost} | {kills} | {rescales} | {len(left)} |"
    )
    return 0 if lost == 0 and not left else 1


if __name__ == "__main__":
    sys.exit(main())
