"""What TLS by default costs: the same clusters with temporary certificates and with plain TCP.

Starts its own private Slurm (tests/slurm_harness.py) with the bubblewrap apptainer stand-in
first on ``PATH``, and measures in one run, TLS and TCP interleaved (``security=True``, the
default, against ``security=False``):

1. creating a ``SlurmCluster`` (the temporary key and certificate, the private directory);
2. time from ``add_workers(tag=..., n=N)`` to N workers connected, N = 1, 4, 8, median of ``--repeats``;
3. throughput of ``--tasks`` no-op tasks with ``tag=`` (``ScalableClient.map``) on
   ``--tp-workers`` workers, median of ``--repeats`` rounds;
4. the same two on a ``LocalCluster`` (worker processes started directly, no Slurm).

Run (as root: Slurm's daemons need it)::

    python benchmarks/tls_bench.py            # about 5 minutes on 2 cores
    python benchmarks/tls_bench.py --quick    # N = 1, 4; 1,000 tasks; 1 repeat
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import warnings

from scalable import LocalCluster, ScalableClient, SlurmCluster
from scalable.security import InsecureClusterWarning
from slurm_counting import start_slurm, use_apptainer_standin, wait_no_jobs

TAG = "bench"


def noop(x):
    return x


class Bench:
    def __init__(self, args, tmp):
        self.args = args
        self.work = os.path.join(tmp, "work")
        os.makedirs(os.path.join(self.work, "containers"))
        with open(os.path.join(self.work, "containers", f"{TAG}_container.sif"), "w") as f:
            f.write("stand-in image for the TLS benchmark\n")
        use_apptainer_standin()
        self.slurm = start_slurm(tmp, nodes=3, cpus=8, memory_mb=8 * 1200)

    def cluster(self, kind, tls):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureClusterWarning)  # the TCP side, on purpose
            t0 = time.perf_counter()
            if kind == "slurm":
                # python=: the interpreter itself, as in a real image (here "python" is a shim)
                cluster = SlurmCluster(
                    queue="slurm",
                    walltime="00:30:00",
                    interface="lo",
                    work_dir=self.work,
                    python=sys.executable,
                    death_timeout=300,
                    security=tls,
                )
            else:
                cluster = LocalCluster(work_dir=self.work, security=tls, silence_logs=logging.ERROR)
            made = time.perf_counter() - t0
        cluster.add_container(TAG, cpus=1, memory="1G")
        return cluster, made

    def run_once(self, kind, tls, n, throughput=False):
        cluster, made = self.cluster(kind, tls)
        try:
            with ScalableClient(cluster) as client:
                t0 = time.perf_counter()
                cluster.add_workers(tag=TAG, n=n)
                client.wait_for_workers(n, timeout=self.args.timeout)
                to_n = time.perf_counter() - t0
                rates = self.throughput(client, cluster) if throughput else []
        finally:
            cluster.close()
        if kind == "slurm":
            wait_no_jobs(self.slurm, f"sc-{cluster.cluster_id}-")
        return {"made": made, "to_n": to_n, "rates": rates}

    def throughput(self, client, cluster):
        client.gather(client.map(noop, range(-200, 0), tag=TAG))  # warm the path
        rates = []
        for r in range(self.args.repeats):
            base = (r + 1) * 10 * self.args.tasks
            t0 = time.perf_counter()
            client.gather(client.map(noop, range(base, base + self.args.tasks), tag=TAG))
            rates.append(self.args.tasks / (time.perf_counter() - t0))
            deadline = time.monotonic() + 30
            while cluster.scheduler.tasks and time.monotonic() < deadline:
                time.sleep(0.05)  # let the scheduler forget this round first
        return rates

    def stop(self):
        self.slurm.stop()


def run(args):
    tmp = tempfile.mkdtemp(prefix="tls-bench-")
    bench = Bench(args, tmp)
    res = {}
    try:
        bench.run_once("slurm", True, 1)  # warm-up, not reported
        for kind in ("slurm", "local"):
            for r in range(args.repeats):
                for n in args.sizes:
                    for tls in (True, False) if (r + n) % 2 == 0 else (False, True):
                        row = bench.run_once(kind, tls, n)
                        res.setdefault((kind, tls, n), []).append(row)
                        print(
                            f"  {kind:5s} {'tls' if tls else 'tcp'} N={n:<2d} "
                            f"made {row['made']:.2f}s  to N {row['to_n']:.2f}s",
                            file=sys.stderr,
                        )
            for tls in (True, False):
                row = bench.run_once(kind, tls, args.tp_workers, throughput=True)
                res[kind, tls, "tp"] = row["rates"]
                print(
                    f"  {kind:5s} {'tls' if tls else 'tcp'} tasks/s "
                    f"{[round(x) for x in row['rates']]}",
                    file=sys.stderr,
                )
    finally:
        bench.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return table(args, res)


def table(args, res):
    rows = []
    med = statistics.median
    for kind in ("slurm", "local"):
        name = "SlurmCluster" if kind == "slurm" else "LocalCluster"
        made = [
            med(r["made"] for n in args.sizes for r in res[kind, tls, n]) for tls in (True, False)
        ]
        rows.append(
            (
                f"{name}: cluster created, s",
                f"{made[0]:.2f}",
                f"{made[1]:.2f}",
                f"{made[0] / made[1]:.2f}x",
            )
        )
        for n in args.sizes:
            t, p = (med(r["to_n"] for r in res[kind, tls, n]) for tls in (True, False))
            what = (
                f"{name}: time to {n} worker{'s' * (n > 1)} connected, s (median of {args.repeats})"
            )
            rows.append((what, f"{t:.2f}", f"{p:.2f}", f"{t / p:.2f}x"))
        t, p = (med(res[kind, tls, "tp"]) for tls in (True, False))
        what = f"{name}: {args.tasks} tagged no-op tasks on {args.tp_workers} workers, tasks/s"
        rows.append((what, f"{t:.0f}", f"{p:.0f}", f"{t / p:.2f}x"))
    return rows


def print_table(rows):
    head = ("measure", "TLS (default)", "plain TCP", "ratio TLS/TCP")
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, None, *rows]:
        print(
            "|"
            + "|".join(
                f" {str(c).ljust(w)} " if r else "-" * (w + 2) for c, w in zip(r or head, widths)
            )
            + "|"
        )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="N = 1, 4; 1,000 tasks; 1 repeat")
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tasks", type=int, default=5000)
    p.add_argument("--tp-workers", type=int, default=4)
    p.add_argument("--timeout", type=float, default=300)
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats, args.tasks = [1, 4], 1, 1000
    started, load0 = time.perf_counter(), os.getloadavg()[0]
    rows = run(args)
    print(
        f"\nscalable TLS benchmark: {os.cpu_count()} cores, "
        f"{time.perf_counter() - started:.0f} s, load average {load0:.1f} at start and "
        f"{os.getloadavg()[0]:.1f} at end; "
        f"`python benchmarks/tls_bench.py {shlex.join(argv or sys.argv[1:])}`\n"
    )
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
