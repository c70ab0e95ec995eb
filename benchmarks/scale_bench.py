"""Scaling benchmark: scalable's SlurmCluster against dask-jobqueue and bare processes.

Starts its own private Slurm (tests/slurm_harness.py; nodes claim enough CPUs for 50 one-CPU
workers), puts the bubblewrap apptainer stand-in (tests/bin/apptainer) and counting shims for
``sbatch``/``squeue``/``scancel`` first on ``PATH``, and prints one table measured in one run:

1. time from ``add_workers(tag, N)`` (scalable) / ``scale(N)`` (dask-jobqueue) to N workers connected,
   N = 1, 4, 8, 16, same cores, memory and worker command (``apptainer exec ... python -m
   distributed.cli.dask_worker ...`` through the stand-in), median of ``--repeats`` runs, the two
   systems interleaved;
2. a burst of 50 workers against the machine's own limit: 50 ``dask worker`` processes started
   directly (no Slurm, no container) against an in-process scheduler;
3. Slurm commands per scale-up burst and per ``close()``, counted by the PATH shims;
4. throughput of 10,000 no-op tasks with ``tag=`` (``ScalableClient.map``) vs without (plain
   ``Client.map``) on the same workers;
5. scheduler memory per connected worker: RSS of this process (which holds the scheduler) with
   50 workers minus RSS with none, divided by 50.

``--start`` runs the worker start-up comparison instead (``start_bench.py``): time to N = 4, 16,
50 workers packed 4 per job against dask-jobqueue's ``processes=4`` and bare processes, CPU
seconds per worker start, and time to the first tagged result from a cold cluster, all with TLS.

Run (as root: Slurm's daemons need it)::

    python benchmarks/scale_bench.py            # full run, about 10 minutes on 2 cores
    python benchmarks/scale_bench.py --quick    # N = 1, 4; burst of 8; 2,000 tasks; 1 repeat
    python benchmarks/scale_bench.py --start    # worker start-up (--start --quick: N = 4 only)
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import psutil
from dask_jobqueue import SLURMCluster as JobqueueCluster
from distributed import Client, LocalCluster

import start_bench
from scalable import ScalableClient, SlurmCluster
from slurm_counting import CommandCounter, start_slurm, use_apptainer_standin, wait_no_jobs

TAG = "bench"
MEMORY = "1G"
WALLTIME = "00:30:00"


def noop(x):
    return x


def rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


class RunningJobs(threading.Thread):
    """Polls the real ``squeue`` (not the counting shim) until ``n`` jobs named ``prefix*`` run.

    Splits "time to N workers" into Slurm's part (submission, scheduling, launch) and the
    workers' start-up, which is the same command for both systems.
    """

    def __init__(self, squeue, prefix, n, every=0.05):
        super().__init__(daemon=True)
        self.argv = [squeue, "--noheader", "--array", "--states=RUNNING", "--format=%j"]
        self.prefix, self.n, self.every = prefix, n, every
        self.at = None
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            out = subprocess.run(self.argv, capture_output=True, text=True).stdout
            if sum(line.startswith(self.prefix) for line in out.split()) >= self.n:
                self.at = time.perf_counter()
                return
            time.sleep(self.every)

    def result(self, t0):
        self.join(timeout=30)
        self.stop.set()
        return None if self.at is None else self.at - t0


class Bench:
    """One benchmark run: the work directory, the private Slurm, the command counter."""

    def __init__(self, args, tmp):
        self.args = args
        self.work = os.path.join(tmp, "work")
        os.makedirs(os.path.join(self.work, "containers"))
        self.image = os.path.join(self.work, "containers", f"{TAG}_container.sif")
        with open(self.image, "w") as f:
            f.write("stand-in image for the scaling benchmark\n")
        self.counter = CommandCounter(tmp).install()
        use_apptainer_standin()
        self.slurm = start_slurm(
            tmp, nodes=args.nodes, cpus=args.cpus_per_node, memory_mb=args.cpus_per_node * 1200
        )
        self._worker_opts = None

    # -- the two Slurm systems -------------------------------------------------------------
    def scalable_cluster(self):
        # python=: the interpreter itself, as in a real image (here "python" is a pyenv shim)
        cluster = SlurmCluster(
            queue="slurm",
            walltime=WALLTIME,
            interface="lo",
            work_dir=self.work,
            python=sys.executable,
            death_timeout=self.args.death_timeout,
        )
        cluster.add_container(TAG, cpus=1, memory=MEMORY)
        return cluster, f"sc-{cluster.cluster_id}-"

    def jobqueue_cluster(self):
        # the same worker command as scalable's: the container exec through the same runtime,
        # the same worker options; only submission (one sbatch per job) differs
        if self._worker_opts is None:
            ref, _ = self.scalable_cluster()
            try:
                self._worker_opts = ref._job_options(TAG)
            finally:
                ref.close()
        extra, python = self._worker_opts["worker_extra_args"], self._worker_opts["python"]
        name = f"jq-{uuid.uuid4().hex[:8]}"
        cluster = JobqueueCluster(
            # dask-jobqueue reads "1G" as 10**9 bytes; "1GiB" is scalable's "1G" (--mem=1024M)
            queue="slurm",
            walltime=WALLTIME,
            interface="lo",
            cores=1,
            memory=MEMORY + "iB",
            processes=1,
            python=python,
            death_timeout=self.args.death_timeout,
            worker_extra_args=extra,
            job_name=name,
            log_directory=os.path.join(self.work, "logs-jobqueue"),
            scheduler_options={"dashboard_address": "127.0.0.1:0"},
        )
        return cluster, name

    def scale_up(self, system, n, measure=None):
        """Time from the scale-up call to ``n`` workers connected; commands per burst/close."""
        if system == "scalable":
            cluster, prefix = self.scalable_cluster()
            start = lambda: cluster.add_workers(TAG, n)  # noqa: E731
        else:
            cluster, prefix = self.jobqueue_cluster()
            start = lambda: cluster.scale(n)  # noqa: E731
        client = Client(cluster)
        try:
            rss0 = rss()
            mark = self.counter.snapshot()
            watch = RunningJobs(self.counter.real["squeue"], prefix, n)
            t0 = time.perf_counter()
            watch.start()
            start()
            client.wait_for_workers(n, timeout=self.args.timeout)
            seconds = time.perf_counter() - t0
            jobs_seconds = watch.result(t0)
            burst = self.counter.since(mark)
            extra = measure(cluster, client) if measure else None
            rss1 = rss()
        finally:
            client.close()
            mark = self.counter.snapshot()
            cluster.close()
            close = self.counter.since(mark)
        wait_no_jobs(self.slurm, prefix)
        return {
            "seconds": seconds,
            "jobs_seconds": jobs_seconds,
            "burst": sum(burst.values()),
            "burst_by": burst,
            "close": sum(close.values()),
            "rss_per_worker": (rss1 - rss0) / n,
            "extra": extra,
            "script": cluster.job_script() if system == "jobqueue" else cluster.job_script(TAG),
        }

    # -- the machine's own limit -------------------------------------------------------------
    def bare_burst(self, n, stagger=0.0):
        """``n`` bare ``dask worker`` processes (no Slurm, no container) to connected.

        ``stagger`` seconds between starts: 50 started in the same instant import in lockstep
        and all finish late; slightly spread (as Slurm's launches are) they finish sooner.
        """
        with (
            LocalCluster(
                n_workers=0,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
                silence_logs=logging.ERROR,
            ) as cluster,
            Client(cluster) as client,
        ):
            rss0 = rss()
            argv = [
                sys.executable,
                "-m",
                "distributed.cli.dask_worker",
                cluster.scheduler_address,
                "--nthreads",
                "1",
                "--memory-limit",
                "1GiB",
                "--nanny",
                "--death-timeout",
                str(self.args.death_timeout),
                "--resources",
                f"{TAG}=1",
            ]
            t0 = time.perf_counter()
            # each its own scratch directory, as each container's private /tmp gives the
            # others: 50 workers sharing one contend for its locks
            scratch = tempfile.mkdtemp(prefix="bare-", dir=self.work)
            procs = []
            for i in range(n):
                own = ["--name", f"bare-{i}", "--local-directory", os.path.join(scratch, str(i))]
                procs.append(
                    subprocess.Popen(
                        [*argv, *own], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                    )
                )
                time.sleep(stagger)
            try:
                client.wait_for_workers(n, timeout=self.args.timeout)
                seconds = time.perf_counter() - t0
                rss1 = rss()
            finally:
                for p in procs:
                    p.terminate()
                for p in procs:
                    try:
                        p.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
        return {"seconds": seconds, "rss_per_worker": (rss1 - rss0) / n}

    # -- tagged vs untagged ---------------------------------------------------------------------
    def throughput(self, cluster, _client):
        """Tasks per second, tagged and untagged, alternating on the same workers."""
        tasks, out = self.args.tasks, {"tagged": [], "untagged": []}
        with ScalableClient(cluster) as tagged, Client(cluster) as plain:
            runs = [("untagged", plain, {}), ("tagged", tagged, {"tag": TAG})]
            for client, kw in ((plain, {}), (tagged, {"tag": TAG})):  # warm both paths
                client.gather(client.map(noop, range(-200, 0), **kw))
            for r in range(self.args.repeats):
                for kind, client, kw in runs if r % 2 == 0 else runs[::-1]:
                    base = (r + 1) * 10 * tasks
                    t0 = time.perf_counter()
                    futs = client.map(noop, range(base, base + tasks), **kw)
                    client.gather(futs)
                    out[kind].append(tasks / (time.perf_counter() - t0))
                    del futs
                    deadline = time.monotonic() + 30
                    while cluster.scheduler.tasks and time.monotonic() < deadline:
                        time.sleep(0.05)  # let the scheduler forget this round first
        return {k: statistics.median(v) for k, v in out.items()}

    def wait_gone(self, prefix):
        wait_no_jobs(self.slurm, prefix)

    def stop(self):
        self.slurm.stop()


def median(rows, key="seconds"):
    return statistics.median(r[key] for r in rows)


def run(args) -> list:
    tmp = tempfile.mkdtemp(prefix="scale-bench-")
    bench = Bench(args, tmp)
    results = {}
    if args.start:
        try:
            return start_bench.run(bench, lambda line: print(line, file=sys.stderr))
        finally:
            bench.stop()
            shutil.rmtree(tmp, ignore_errors=True)
    try:
        # warm-up (not reported): first imports, first job launch on each node
        bench.scale_up("scalable", 1)
        bench.scale_up("jobqueue", 1)
        for r in range(args.repeats):
            for n in args.sizes:
                order = ("scalable", "jobqueue") if r % 2 == 0 else ("jobqueue", "scalable")
                for system in order:
                    row = bench.scale_up(system, n)
                    results.setdefault((system, n), []).append(row)
                    print(
                        f"  {system:9s} N={n:<3d} {row['seconds']:6.2f}s  "
                        f"(jobs running at {row['jobs_seconds'] or float('nan'):.2f}s)  "
                        f"burst {row['burst_by']}  close {row['close']}",
                        file=sys.stderr,
                    )
        b = args.burst
        for system in ("bare", "bare-staggered", "scalable", "jobqueue"):
            if system.startswith("bare"):
                row = bench.bare_burst(b, args.bare_stagger if "stagger" in system else 0.0)
            else:
                row = bench.scale_up(system, b)
            results[system, b] = [row]
            print(f"  {system:9s} N={b:<3d} {row['seconds']:6.2f}s", file=sys.stderr)
        tp = bench.scale_up("scalable", args.tp_workers, measure=bench.throughput)["extra"]
        if args.show_scripts:
            print(results["scalable", 1][0]["script"], "\n", results["jobqueue", 1][0]["script"])
    finally:
        bench.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return table(args, results, tp)


def table(args, res, tp) -> list:
    rows = []

    def row(measure, sc, jq, ratio, goal, met):
        rows.append((measure, sc, jq, ratio, goal, "yes" if met else "NO"))

    def spread(rows):  # the run-to-run spread says how much a ratio can be trusted
        xs = [r["seconds"] for r in rows]
        return f"{statistics.median(xs):.2f} ({min(xs):.1f}-{max(xs):.1f})"

    for n in args.sizes:
        s, j = median(res["scalable", n]), median(res["jobqueue", n])
        row(
            f"time to {n} worker{'s' * (n > 1)} connected, s: median (min-max) of {args.repeats}",
            spread(res["scalable", n]),
            spread(res["jobqueue", n]),
            f"{s / j:.2f}x",
            "<= 1.0x",
            s <= j,
        )
    for n in args.sizes:  # Slurm's part of the above: until squeue shows the N jobs running
        s, j = (
            statistics.median([r["jobs_seconds"] for r in res[k, n] if r["jobs_seconds"]] or [0])
            for k in ("scalable", "jobqueue")
        )
        row(
            f"  of which Slurm's part, {n} job{'s' * (n > 1)} running, s: median of {args.repeats}",
            f"{s:.2f}",
            f"{j:.2f}",
            f"{s / j:.2f}x" if j else "-",
            "-",
            True,
        )
    b = args.burst
    s, j, once, spread_ = (
        res[k, b][0]["seconds"] for k in ("scalable", "jobqueue", "bare", "bare-staggered")
    )
    bare = min(once, spread_)  # the machine's limit: the better way to start them directly
    row(
        f"burst of {b} workers, s (bare processes: {once:.1f} at once, {spread_:.1f} "
        f"{args.bare_stagger:g} s apart)",
        f"{s:.2f}",
        f"{j:.2f}",
        f"{s / bare:.2f}x bare",
        "<= 1.2x bare",
        s <= 1.2 * bare,
    )
    for n in [*args.sizes, b]:
        s, j = (
            max(res[k, n], key=lambda r: r["burst"])["burst_by"] for k in ("scalable", "jobqueue")
        )
        subs = [x["sbatch"] + x["scancel"] for x in (s, j)]
        row(
            f"Slurm commands, burst of {n}: sbatch+scancel (+squeue)",
            *(f"{c} (+{x['squeue']})" for c, x in zip(subs, (s, j))),
            f"{subs[0]}/{subs[1]}",
            "<= 2 per tag",
            subs[0] <= 2,
        )
    for n in [*args.sizes, b]:
        s, j = (max(r["close"] for r in res[k, n]) for k in ("scalable", "jobqueue"))
        row(f"Slurm commands, close() of {n}", str(s), str(j), f"{s}/{j}", "1", s == 1)
    t, u = tp["tagged"], tp["untagged"]
    row(
        f"{args.tasks} no-op tasks on {args.tp_workers} workers, tasks/s (tagged | untagged)",
        f"{t:.0f}",
        f"{u:.0f} (untagged)",
        f"{t / u:.2f}x",
        ">= 0.95x",
        t >= 0.95 * u,
    )
    s, j, bare = (res[k, b][0]["rss_per_worker"] / 1024 for k in ("scalable", "jobqueue", "bare"))
    row(
        f"scheduler RSS per connected worker, KiB ({b} workers; bare: {bare:.0f})",
        f"{s:.0f}",
        f"{j:.0f}",
        f"{s / bare:.2f}x bare",
        "-",
        True,
    )
    return rows


def print_table(rows, head=None):
    head = head or ("measure", "scalable", "dask-jobqueue", "ratio", "goal", "met")
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
    p.add_argument("--quick", action="store_true", help="small sizes, one repeat (about 2 min)")
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 8, 16])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--burst", type=int, default=50)
    p.add_argument("--tasks", type=int, default=10_000)
    p.add_argument("--tp-workers", type=int, default=4, help="workers for the throughput run")
    p.add_argument(
        "--bare-stagger",
        type=float,
        default=0.1,
        help="seconds between bare worker starts in the staggered bare burst",
    )
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--cpus-per-node", type=int, default=20)
    p.add_argument("--timeout", type=float, default=300, help="longest wait for a burst, s")
    p.add_argument(
        "--death-timeout",
        type=int,
        default=300,
        help="worker --death-timeout for all three (a nanny whose worker takes longer "
        "than this to start gives up: 50 at once on 2 busy cores can take > 60 s)",
    )
    p.add_argument("--show-scripts", action="store_true", help="print both job scripts")
    p.add_argument(
        "--start",
        action="store_true",
        help="worker start-up instead: packed jobs, nanny=False, first result, CPU",
    )
    p.add_argument("--start-sizes", type=int, nargs="+", default=[4, 16, 50])
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats, args.burst, args.tasks = [1, 4], 1, 8, 2000
        args.start_sizes = [4]
    if args.nodes * args.cpus_per_node < max(args.burst, *args.sizes, *args.start_sizes):
        p.error("--nodes x --cpus-per-node must hold the largest burst")
    started, load0 = time.perf_counter(), os.getloadavg()[0]
    rows = run(args)
    # the machine may be shared: its load says how much the times can be trusted
    print(
        f"\nscalable scaling benchmark: {os.cpu_count()} cores, "
        f"{time.perf_counter() - started:.0f} s, load average {load0:.1f} at start and "
        f"{os.getloadavg()[0]:.1f} at end; "
        f"`python benchmarks/scale_bench.py {shlex.join(argv or sys.argv[1:])}`\n"
    )
    print_table(rows, start_bench.HEAD if args.start else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
