"""Worker start-up for ``scale_bench.py --start``: packed jobs, ``nanny=False``, first result.

Every system runs as users get it, with TLS (temporary certificates: ``security=True`` for
scalable, ``Security.temporary()`` for dask-jobqueue, the same files for bare workers), the same
worker command through the apptainer stand-in, one CPU and 1 GiB per worker:

- ``packed``: scalable, ``workers_per_job=4`` (tag cpus=4, memory=4G; each worker 1 thread and
  1 GiB): one process per job imports Dask and forks its 4 workers from distributed's
  forkserver;
- ``one``: scalable, one worker per job under its nanny (the default);
- ``no-nanny``: scalable, one worker per job, ``nanny=False``;
- ``today``: the worker command scalable used before packed jobs forked their workers: one
  worker per job under its nanny, each worker with its Bokeh pages (``--no-dashboard`` taken
  out again), the baseline of "CPU per worker start";
- ``jq-p4``: dask-jobqueue, ``processes=4`` (cores=4, memory=4GiB): ``dask worker --nworkers 4``
  with the default start method (spawn), its way of packing;
- ``jq``: dask-jobqueue, one worker per job (for the first result);

dask-jobqueue gets the worker command of ``today`` (the stand-in's ``apptainer exec ... python``,
the same ``--resources``, ``--lifetime`` and ``--death-timeout``): its workers start their Bokeh
pages, as its users get them.
- ``bare``: ``dask worker`` processes (with nannies) started directly, no Slurm, no container,
  0.1 s apart.

CPU per worker start: when the N-th worker connects, the CPU time (user + system, with reaped
children's) of every process of the benchmark's jobs (the batch script and all it started, found
under ``slurmstepd``; Slurm's own daemons are left out), or of the bare processes, over N.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import psutil
from dask_jobqueue import SLURMCluster as JobqueueCluster
from distributed import Client, LocalCluster
from distributed.security import Security

from scalable import ScalableClient, SlurmCluster

#: the table's columns
HEAD = ("measure", "scalable packed (k=4)", "dask-jobqueue processes=4", "ratio", "goal", "met")
TAG = "bench"
WALLTIME = "00:30:00"
K = 4


def job_cpu(prefix) -> float:
    """CPU seconds used so far by the processes of the jobs named ``prefix*``."""
    total = 0.0
    for stepd in psutil.process_iter(["name"]):
        if stepd.info["name"] != "slurmstepd":
            continue
        try:
            scripts = stepd.children()
        except psutil.Error:
            continue
        for script in scripts:
            try:
                if not script.environ().get("SLURM_JOB_NAME", "").startswith(prefix):
                    continue
                total += tree_cpu(script)
            except psutil.Error:
                continue
    return total


def tree_cpu(proc) -> float:
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


class TodayCluster(SlurmCluster):
    """scalable's worker command before this comparison's changes (worker Bokeh pages on)."""

    def _job_options(self, tag):
        options = super()._job_options(tag)
        options["worker_extra_args"] = [
            a for a in options["worker_extra_args"] if a != "--no-dashboard"
        ]
        return options


class StartBench:
    """Time to N, CPU per worker start and time to first result for the systems above."""

    def __init__(self, bench):
        self.bench, self.args, self.work = bench, bench.args, bench.work
        self.tls = os.path.join(self.work, "tls-jobqueue")
        os.makedirs(self.tls, mode=0o700, exist_ok=True)
        self._jq_python = None

    # -- the systems ------------------------------------------------------------------------------
    def scalable(self, k=1, nanny=True, cls=SlurmCluster):
        cluster = cls(
            queue="slurm",
            walltime=WALLTIME,
            interface="lo",
            work_dir=self.work,
            python=sys.executable,
            death_timeout=self.args.death_timeout,
            security=True,
            workers_per_job=k,
            nanny=nanny,
        )
        cluster.add_container(TAG, cpus=k, memory=f"{k}G")
        return cluster, f"sc-{cluster.cluster_id}-"

    def jobqueue(self, k=1):
        if self._jq_python is None:  # scalable's worker command, as in scale_bench's runs
            ref, _ = self.scalable(cls=TodayCluster)
            try:
                opts = ref._job_options(TAG)
                self._jq_python = (opts["python"], opts["worker_extra_args"])
            finally:
                ref.close()
        python, extra = self._jq_python
        name = f"jq-{uuid.uuid4().hex[:8]}"
        cluster = JobqueueCluster(
            queue="slurm",
            walltime=WALLTIME,
            interface="lo",
            cores=k,
            memory=f"{k}GiB",
            processes=k,
            python=python,
            death_timeout=self.args.death_timeout,
            worker_extra_args=extra,
            job_name=name,
            log_directory=os.path.join(self.work, "logs-jobqueue"),
            scheduler_options={"dashboard_address": "127.0.0.1:0"},
            security=Security.temporary(),
            shared_temp_directory=self.tls,
        )
        return cluster, name

    def make(self, system):
        return {
            "packed": lambda: self.scalable(K),
            "one": lambda: self.scalable(1),
            "today": lambda: self.scalable(1, cls=TodayCluster),
            "no-nanny": lambda: self.scalable(1, nanny=False),
            "jq-p4": lambda: self.jobqueue(K),
            "jq": lambda: self.jobqueue(1),
        }[system]()

    # -- measures ---------------------------------------------------------------------------------
    def time_to_n(self, system, n):
        if system == "bare":
            return self.bare(n)
        cluster, prefix = self.make(system)
        client = Client(cluster)
        try:
            t0 = time.perf_counter()
            if isinstance(cluster, SlurmCluster):
                cluster.add_workers(TAG, n)
            else:
                cluster.scale(n)
            client.wait_for_workers(n, timeout=self.args.timeout)
            seconds = time.perf_counter() - t0
            cpu = job_cpu(prefix)
        finally:
            client.close()
            cluster.close()
        self.bench.wait_gone(prefix)
        k = K if system in ("packed", "jq-p4") else 1
        started = -(-n // k) * k  # whole jobs: 50 workers packed 4 per job are 13 jobs, 52
        return {"seconds": seconds, "cpu_per_worker": cpu / started}

    def first_result(self, system):
        """From the scale-up call on a cluster that never had a worker to a tagged result."""
        cluster, prefix = self.make(system)
        try:
            if isinstance(cluster, SlurmCluster):
                with ScalableClient(cluster) as client:
                    t0 = time.perf_counter()
                    cluster.add_workers(TAG, 1)
                    value = client.submit(sum, [1, 2], tag=TAG).result(timeout=self.args.timeout)
            else:
                with Client(cluster) as client:
                    t0 = time.perf_counter()
                    cluster.scale(1)
                    value = client.submit(sum, [1, 2], resources={TAG: 1}).result(
                        timeout=self.args.timeout
                    )
            seconds = time.perf_counter() - t0
            assert value == 3
        finally:
            cluster.close()
        self.bench.wait_gone(prefix)
        return {"seconds": seconds}

    def bare(self, n, stagger=0.1):
        sec = Security.temporary()
        files = {}
        for flag, pem in (
            ("--tls-ca-file", sec.tls_ca_file),
            ("--tls-cert", sec.tls_worker_cert),
            ("--tls-key", sec.tls_worker_key),
        ):
            fd, path = tempfile.mkstemp(dir=self.tls, suffix=".pem")
            with os.fdopen(fd, "w") as f:
                f.write(pem)
            files[flag] = path
        with (
            LocalCluster(
                n_workers=0,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
                security=sec,
                protocol="tls://",
                silence_logs=40,
            ) as cluster,
            Client(cluster) as client,
        ):
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
                *(x for kv in files.items() for x in kv),
            ]
            scratch = tempfile.mkdtemp(prefix="bare-", dir=self.work)
            procs = []
            t0 = time.perf_counter()
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
                cpu = sum(tree_cpu(psutil.Process(p.pid)) for p in procs)
            finally:
                for p in procs:
                    p.terminate()
                for p in procs:
                    try:
                        p.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
        return {"seconds": seconds, "cpu_per_worker": cpu / n}


SIZES_SYSTEMS = {  # N -> systems timed at that N (one worker per job only where it fits in time)
    4: ("packed", "jq-p4", "bare", "today", "one", "no-nanny"),
    16: ("packed", "jq-p4", "bare", "today", "one", "no-nanny"),
    50: ("packed", "jq-p4", "bare"),
}
FIRST = ("one", "no-nanny", "packed", "jq")


def run(bench, log) -> list:
    """All start measures, interleaved: each repeat rotates the order of the systems."""
    sb, args = StartBench(bench), bench.args
    sizes = [n for n in args.start_sizes]
    res = {}
    sb.time_to_n("packed", K)  # warm-up, not reported: first imports, first forkserver
    sb.time_to_n("jq-p4", K)
    for r in range(args.repeats):
        for n in sizes:
            systems = SIZES_SYSTEMS.get(n, SIZES_SYSTEMS[16])
            systems = systems[r % len(systems) :] + systems[: r % len(systems)]
            for system in systems:
                row = sb.time_to_n(system, n)
                res.setdefault((system, n), []).append(row)
                log(
                    f"  start {system:9s} N={n:<3d} {row['seconds']:6.2f}s  "
                    f"cpu/worker {row['cpu_per_worker']:.2f}s"
                )
        order = FIRST[r % len(FIRST) :] + FIRST[: r % len(FIRST)]
        for system in order:
            row = sb.first_result(system)
            res.setdefault((system, "first"), []).append(row)
            log(f"  first result {system:9s} {row['seconds']:6.2f}s")
    return table(sizes, args.repeats, res)


def table(sizes, repeats, res) -> list:
    rows = []

    def med(system, n, key="seconds"):
        return statistics.median(r[key] for r in res[system, n])

    def spread(system, n):
        xs = [r["seconds"] for r in res[system, n]]
        return f"{statistics.median(xs):.2f} ({min(xs):.1f}-{max(xs):.1f})"

    for n in sizes:
        p, j, b = med("packed", n), med("jq-p4", n), med("bare", n)
        goal = n >= 16
        rows.append(
            (
                f"time to {n} workers, s: median (min-max) of {repeats}; bare {spread('bare', n)}",
                spread("packed", n),
                spread("jq-p4", n),
                f"{p / j:.2f}x, {p / b:.2f}x bare",
                "<= 0.5x, < 1x bare" if goal else "-",
                ("yes" if p <= 0.5 * j and p < b else "NO") if goal else "-",
            )
        )
        for system in ("one", "no-nanny", "today"):
            if (system, n) in res:
                s = med(system, n)
                rows.append(
                    (
                        f"  time to {n} workers, scalable {system} (one worker per job), s",
                        spread(system, n),
                        "",
                        f"{s / j:.2f}x, {s / b:.2f}x bare",
                        "-",
                        "-",
                    )
                )
    for n in sizes:
        cpu = {
            s: med(s, n, "cpu_per_worker")
            for s in ("packed", "jq-p4", "bare", "today", "one", "no-nanny")
            if (s, n) in res
        }
        base = cpu.get("today")
        rows.append(
            (
                f"CPU s per worker start, N={n} (bare {cpu['bare']:.2f}"
                + (
                    f", today {base:.2f}, one {cpu['one']:.2f}, no-nanny {cpu['no-nanny']:.2f}"
                    if base
                    else ""
                )
                + ")",
                f"{cpu['packed']:.2f}",
                f"{cpu['jq-p4']:.2f}",
                f"{cpu['packed'] / base:.2f}x today" if base else "-",
                "<= 0.3x today" if base else "-",
                ("yes" if cpu["packed"] <= 0.3 * base else "NO") if base else "-",
            )
        )
    jq = med("jq", "first")
    for system in ("one", "no-nanny", "packed"):
        s = med(system, "first")
        rows.append(
            (
                f"time to first tagged result, cold cluster, s: scalable {system} | dask-jobqueue 1 per job",
                spread(system, "first"),
                spread("jq", "first"),
                f"{s / jq:.2f}x",
                "<= 0.8x",
                "yes" if s <= 0.8 * jq else "NO",
            )
        )
    return rows
