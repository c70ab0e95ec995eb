"""Fault injection on the real test Slurm: lost workers, node failure, a killed client process,
walltime rollover, and clean-up of dead clusters' jobs."""

import asyncio
import os
import select
import signal
import subprocess
import sys
import textwrap
import time

import dask
import pytest

from scalable import ScalableClient, SlurmCluster
from scalable.jupyter import registry
from scalable.jupyter.handlers import call_scheduler
from scalable.runner import run
from waiting import wait_for

pytestmark = pytest.mark.slurm

FAST_RECOVERY = {"scalable.recovery.interval": "0.5s", "scalable.recovery.backoff-max": "1s"}


def live_jobs(cluster_id):
    out = run(["squeue", "--noheader", "--array", "--format=%i|%j|%T"]).stdout
    return [
        line.split("|")
        for line in out.splitlines()
        if f"sc-{cluster_id}-" in line and "COMPLETING" not in line
    ]


@pytest.fixture
def work(tmp_path, make_image, apptainer, monkeypatch):
    make_image("gcam", tmp_path / "containers")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def names_of(client, tag):
    return sorted(
        w["name"]
        for w in client.scheduler_info()["workers"].values()
        if w["name"].startswith(f"{tag}-")
    )


def test_cancelled_job_is_replaced_and_its_task_still_finishes(work, slurm):
    runs = work / "runs"  # the work directory is bound into every worker: count the attempts

    def slow(x):
        with open(runs, "a") as f:
            f.write("run\n")
        time.sleep(4)
        return x * 2

    with dask.config.set(FAST_RECOVERY), SlurmCluster(queue="slurm", interface="lo") as cluster:
        cluster.add_container(tag="gcam", cpus=1, memory="512M")
        cluster.add_workers("gcam", 2)
        with ScalableClient(cluster) as client:
            client.wait_for_workers(2, timeout=180)
            fut = client.submit(slow, 21, tag="gcam")
            running_on = wait_for(
                lambda: [a for a, keys in client.processing().items() if keys],
                30,
                "the task to be sent",
            )[0]
            wait_for(lambda: runs.exists() and "run" in runs.read_text(), 60, "the task to start")
            name = client.scheduler_info()["workers"][running_on]["name"]
            run(["scancel", cluster.workers[name].job_id])  # "cancelled from outside"
            assert fut.result(timeout=90) == 42
            assert runs.read_text().count("run") == 2  # cut short once, then rerun elsewhere
            wait_for(lambda: len(names_of(client, "gcam")) == 2, 60, "a replacement worker")
            assert name not in names_of(client, "gcam")
            assert cluster.targets == {"gcam": 2}
            assert cluster._watcher.replaced >= 1


def cancel_again_and_again(cluster, started):
    """scancel a worker's job once ``started(job)`` holds, more times than give-up allows."""
    for _ in range(cluster._watcher.max_failures + 1):
        victim = wait_for(
            lambda: [
                j for j in cluster.workers.values() if getattr(j, "job_id", None) and started(j)
            ],
            60,
            "a job to cancel",
        )[0].job_id
        run(["scancel", victim])
        wait_for(
            lambda victim=victim: (
                len(cluster.workers) == 2
                and victim not in {getattr(j, "job_id", None) for j in cluster.workers.values()}
            ),
            30,
            f"a replacement for job {victim}",
        )
    assert cluster.tag_errors == {} and cluster.pools["gcam"].failures == 0
    assert cluster.targets == {"gcam": 2}
    assert len(live_jobs(cluster.cluster_id)) == 2


@pytest.mark.parametrize("when", ["pending", "starting"])
def test_jobs_cancelled_before_connecting_are_replaced_not_counted_as_failed_starts(
    work, slurm, when
):
    # pending: the jobs wait for a begin time an hour away; starting: they run, but their
    # worker starts only after a long prologue
    extra = (
        {"job_extra_directives": ["--begin=now+3600"]}
        if when == "pending"
        else {"job_script_prologue": ["sleep 120"]}
    )
    with (
        dask.config.set(FAST_RECOVERY),
        SlurmCluster(queue="slurm", interface="lo", **extra) as cluster,
    ):
        cluster.add_container(tag="gcam", cpus=1, memory="512M")
        cluster.add_workers("gcam", 2)
        cancel_again_and_again(
            cluster, lambda job: when == "pending" or os.path.exists(cluster._log_path(job))
        )


def test_node_failure_workers_come_back_elsewhere(work, slurm):
    cpus = int(slurm.run(["sinfo", "--noheader", "-N", "--format=%c"]).stdout.split()[0])
    with dask.config.set(FAST_RECOVERY), SlurmCluster(queue="slurm", interface="lo") as cluster:
        # each worker takes a whole node, so the two land on different nodes
        cluster.add_container(tag="gcam", cpus=cpus, memory="512M")
        cluster.add_workers("gcam", 2)
        with ScalableClient(cluster) as client:
            client.wait_for_workers(2, timeout=180)
            nodes = {j["node"] for j in cluster.jobs()}
            assert len(nodes) == 2
            victim = sorted(nodes)[0]
            slurm.stop_node(victim)
            try:

                def recovered():
                    jobs = [j for j in cluster.jobs() if j["state"] == "RUNNING"]
                    return (
                        len(names_of(client, "gcam")) == 2
                        and len(jobs) == 2
                        and victim not in {j["node"] for j in jobs}
                    )

                wait_for(recovered, 120, "workers back on other nodes", every=1)
                assert client.submit(sum, [1, 2], tag="gcam").result(timeout=60) == 3
            finally:
                slurm.start_node(victim)


def test_killed_client_process_leaves_no_jobs_and_cleanup_spares_others(work, slurm):
    script = textwrap.dedent("""
        import sys, time
        from scalable import SlurmCluster, ScalableClient
        # death_timeout also bounds a worker's start: leave room for a loaded machine
        c = SlurmCluster(queue="slurm", interface="lo", death_timeout=30)
        c.add_container(tag="gcam", cpus=1, memory="512M")
        c.add_workers("gcam", 2)
        ScalableClient(c).wait_for_workers(2, timeout=300)
        # a second pool that can never start: the jobs wait for a begin time an hour away
        c2 = SlurmCluster(queue="slurm", interface="lo", job_extra_directives=["--begin=now+3600"])
        c2.add_container(tag="gcam", cpus=1, memory="512M")
        c2.add_workers("gcam", 2)
        print(c.cluster_id, c2.cluster_id, flush=True)
        time.sleep(600)
    """)
    other = run(
        ["sbatch", "--parsable", "-J", "not-scalable", "--begin=now+3600", "--wrap", "true"]
    ).stdout.strip()
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=work,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        ready = select.select([proc.stdout], [], [], 360)[0]  # never wait for ever in CI
        assert ready, "the cluster process did not start its workers within 360 s"
        running_id, pending_id = proc.stdout.readline().split()
        assert len(live_jobs(running_id)) == 2 and len(live_jobs(pending_id)) == 2
        listing = subprocess.run(
            [sys.executable, "-m", "scalable.cli", "jobs"],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        assert running_id in listing and pending_id in listing and "(cluster dead)" not in listing
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # workers notice their scheduler is gone and exit: their jobs end by themselves
    wait_for(lambda: not live_jobs(running_id), 180, "the dead cluster's workers to exit", every=1)
    assert len(live_jobs(pending_id)) == 2  # pending jobs have no worker to notice
    with pytest.warns(UserWarning, match="2 Slurm job.*scalable cleanup"):
        SlurmCluster(queue="slurm", interface="lo").close()
    out = subprocess.run(
        [sys.executable, "-m", "scalable.cli", "cleanup"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "cancelled 2 job(s)" in out
    wait_for(lambda: not live_jobs(pending_id), 30, "cleanup to cancel the pending jobs")
    assert other in {j["job_id"] for j in slurm.squeue()}  # never another job of the user
    run(["scancel", other])


def test_walltime_rollover_keeps_the_pool_and_long_task_fails_clearly(work, slurm):
    def long_task():
        time.sleep(60)
        return "never"

    # a replacement has 36 s to connect before its predecessor retires (about 5 s when idle,
    # 10-20 s on a loaded machine)
    settings = {
        **FAST_RECOVERY,
        "scalable.slurm.lifetime": "40s",
        "scalable.slurm.lifetime-stagger": "1s",
        "scalable.recovery.rollover-lead": "36s",
    }
    with (
        dask.config.set(settings),
        SlurmCluster(queue="slurm", walltime="00:30:00", interface="lo") as cluster,
    ):
        # the tag's own walltime is the one its workers meet, and the one the error names
        cluster.add_container(tag="gcam", cpus=1, memory="512M", walltime="00:01:00")
        cluster.add_workers("gcam", 1)
        with ScalableClient(cluster) as client:
            client.wait_for_workers(1, timeout=180)
            first = names_of(client, "gcam")
            fut = client.submit(long_task, tag="gcam")
            counts = []
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and not fut.done():
                counts.append(len(names_of(client, "gcam")))
                time.sleep(0.25)
            with pytest.raises(
                Exception,
                match=r"walltime \(00:01:00.*raise the walltime \(cluster\.add_container\('gcam'",
            ):
                fut.result(timeout=240)
            # workers rolled over, and a replacement was always there before the old one left
            assert names_of(client, "gcam") != first
            assert min(counts) >= 1, counts
            assert cluster.targets == {"gcam": 1}


def test_failing_container_stops_retrying_and_says_why(work, slurm, make_image):
    missing = work / "not-there"
    make_image("broken", work / "containers")
    with dask.config.set(FAST_RECOVERY), SlurmCluster(queue="slurm", interface="lo") as cluster:
        os.makedirs(missing)
        cluster.add_container(tag="broken", cpus=1, memory="512M", dirs={str(missing): "/x"})
        os.rmdir(missing)  # the bind source vanishes after preflight, as on a compute node
        cluster.add_workers("broken", 1)
        wait_for(lambda: cluster.tag_errors.get("broken"), 90, "the tag to be given up", every=1)
        error = cluster.tag_errors["broken"]
        assert "3 workers of tag 'broken' in a row ended before connecting" in error
        assert "FATAL" in error and "not-there" in error  # the runtime's own words, from the log
        assert cluster.tag_status()["broken"]["error"] == error
        assert not live_jobs(cluster.cluster_id)


def test_tls_security_with_containerized_workers(work, slurm):
    with SlurmCluster(queue="slurm", interface="lo", security=True) as cluster:
        assert cluster.scheduler_address.startswith("tls://127.0.0.1:")
        cluster.add_container(tag="gcam", cpus=1, memory="512M")
        assert "--tls-ca-file" in cluster.job_script("gcam")
        cluster.add_workers("gcam", 1)
        with ScalableClient(cluster, security=cluster.security) as client:

            def image():
                return os.environ["APPTAINER_NAME"]

            assert client.submit(image, tag="gcam").result(timeout=90) == "gcam_container.sif"
        # the sidebar reaches a TLS cluster with the credentials in its private registry entry
        entry = registry.read_entry(cluster.cluster_id)
        status = asyncio.run(call_scheduler(entry, "scalable_status", timeout=60))
        assert status["tags"]["gcam"]["running"] == 1, status
        with pytest.raises(Exception):  # noqa: B017  (and nothing reaches it without them)
            asyncio.run(call_scheduler({**entry, "tls": None}, "scalable_status", timeout=5))
        tls_dir = work / ".scalable" / "tls"
        assert oct(tls_dir.stat().st_mode & 0o777) == "0o700"
