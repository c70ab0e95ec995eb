"""Cost of the notebook panel's live refresh, by number of workers.

For each worker count, starts that many workers of one tag (local processes, and with ``--slurm``
Slurm jobs on the private test Slurm of ``tests/slurm_harness.py`` through the bubblewrap
apptainer stand-in), then times ``--rounds`` panel refreshes (one ``tag_status`` and the widget
updates), the job query alone, and the widget-free HTML summary. Prints milliseconds per refresh, Slurm commands per
refresh (goal: exactly one ``squeue``, whatever the number of workers) and the ratio to the
smallest pool (goal: about 1x: the cost does not grow with workers).

Run::

    python benchmarks/panel_bench.py [--workers 1,8,16] [--rounds 20] [--slurm]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dask

TESTS = Path(__file__).resolve().parent.parent / "tests"


def wait_running(cluster, tag, n, timeout=300):
    deadline = time.monotonic() + timeout
    while cluster.tag_status()[tag]["running"] < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{n} {tag} workers did not start in {timeout}s")
        time.sleep(0.2)


def measure(cluster, tag, counts, rounds) -> list:
    from scalable.jupyter import widget

    with dask.config.set({"scalable.jupyter.refresh-interval": "1h"}):  # we time them one by one
        panel = widget.panel_of(cluster)
    rows = []
    for n in counts:
        cluster.scale_tag(tag, n)
        wait_running(cluster, tag, n)
        commands = dict(getattr(cluster, "slurm_commands", {}))
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            cluster.sync(panel.refresh)
            times.append(time.perf_counter() - t0)
        after = getattr(cluster, "slurm_commands", {})
        per = {k: (after.get(k, 0) - commands.get(k, 0)) / rounds for k in after}
        t0 = time.perf_counter()
        for _ in range(rounds):
            widget.summary_html(cluster)
        html_ms = (time.perf_counter() - t0) / rounds * 1000
        query = []  # the job query alone (squeue's own cost on this machine)
        for _ in range(rounds):
            t0 = time.perf_counter()
            cluster.sync(cluster._jobs_async)
            query.append(time.perf_counter() - t0)
        rows.append(
            {
                "workers": n,
                "refresh_ms": statistics.median(times) * 1000,
                "squeue": per.get("squeue", 0),
                "others": sum(v for k, v in per.items() if k != "squeue"),
                "html_ms": html_ms,
                "running": panel.status[tag]["running"],
                "query_ms": statistics.median(query) * 1000,
            }
        )
    return rows


def show(kind, rows):
    base = rows[0]["refresh_ms"]
    print(f"\n{kind}: panel refresh by pool size")
    print(
        f"{'workers':>8} {'running':>8} {'refresh ms':>11} {'ratio':>6} {'job query ms':>13} "
        f"{'squeue/refresh':>15} {'other cmds':>11} {'html ms':>8}"
    )
    for r in rows:
        print(
            f"{r['workers']:>8} {r['running']:>8} {r['refresh_ms']:>11.2f} "
            f"{r['refresh_ms'] / base:>6.2f} {r['query_ms']:>13.2f} {r['squeue']:>15.2f} "
            f"{r['others']:>11.2f} {r['html_ms']:>8.2f}"
        )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", default="1,8,16")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--slurm", action="store_true", help="also on the private test Slurm")
    args = p.parse_args(argv)
    counts = [int(n) for n in args.workers.split(",")]

    from scalable import LocalCluster

    with tempfile.TemporaryDirectory() as work, LocalCluster(work_dir=work) as cluster:
        cluster.add_container(tag="bench", cpus=1, memory="256M")
        show("local", measure(cluster, "bench", counts, args.rounds))

    if args.slurm:
        sys.path.insert(0, str(TESTS))
        from scalable import SlurmCluster
        from slurm_harness import SlurmTestCluster

        os.environ["PATH"] = f"{TESTS / 'bin'}{os.pathsep}{os.environ['PATH']}"
        with SlurmTestCluster() as slurm, tempfile.TemporaryDirectory() as work:
            os.environ["SLURM_CONF"] = slurm.conf
            os.makedirs(f"{work}/containers")
            Path(f"{work}/containers/bench_container.sif").write_text("stand-in image\n")
            with SlurmCluster(
                queue="slurm", interface="lo", walltime="00:20:00", work_dir=work
            ) as cluster:
                cluster.add_container(tag="bench", cpus=1, memory="200M")
                show("slurm", measure(cluster, "bench", counts, args.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
