"""Job arrays, batched cancels and packed jobs on the real test Slurm (issue: scale light).

Slurm commands are counted at the command line: ``sbatch``/``squeue``/``scancel`` shims first on
``PATH`` log every call, then exec the real program, so a command issued behind the cluster's
own ``slurm_commands`` counter still shows up here.
"""

import os
import shlex
import shutil

import dask
import pytest

from scalable import ScalableClient, SlurmCluster
from test_slurm_cluster import wait_for

pytestmark = pytest.mark.slurm

COUNTED = ("sbatch", "squeue", "scancel")


class Counts:
    def __init__(self, log):
        self.log = log

    def __call__(self):
        lines = self.log.read_text().split()
        return {prog: lines.count(prog) for prog in COUNTED}

    def since(self, before):
        now = self()
        return {prog: now[prog] - before[prog] for prog in COUNTED}


@pytest.fixture
def counts(tmp_path, monkeypatch):
    """Slurm commands run by this process and its children, counted by PATH shims."""
    shims, log = tmp_path / "shims", tmp_path / "slurm-commands.log"
    shims.mkdir()
    log.touch()
    for prog in COUNTED:
        real = shutil.which(prog)
        (shims / prog).write_text(
            f'#!/bin/sh\necho {prog} >> {shlex.quote(str(log))}\nexec {shlex.quote(real)} "$@"\n'
        )
        (shims / prog).chmod(0o755)
    monkeypatch.setenv("PATH", f"{shims}{os.pathsep}{os.environ['PATH']}")
    return Counts(log)


@pytest.fixture
def work(tmp_path, make_image, apptainer, counts, monkeypatch):
    make_image("gcam", tmp_path / "containers")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def queued(slurm, cluster):
    """Job ids of this cluster still queued or running, array tasks unfolded."""
    return {
        j["job_id"]
        for j in slurm.squeue("--array")
        if j["name"].startswith(f"sc-{cluster.cluster_id}-")
        and j["state"] not in ("COMPLETING", "COMPLETED", "CANCELLED")
    }


def job_ids(cluster):
    return {name: job.job_id for name, job in cluster.workers.items()}


def make_cluster(**kw):
    return SlurmCluster(queue="slurm", walltime="00:10:00", interface="lo", **kw)


def check_burst_remove_close(slurm, counts, cluster, array):
    """Four add_workers calls in a row, remove two, close: the commands each step costs."""
    cluster.add_container(tag="gcam", cpus=1, memory="256M")
    script = cluster.job_script("gcam")
    assert ("SLURM_ARRAY_TASK_ID" in script) is array
    assert ("%x-%A_%a.log" if array else "%x-%j.log") in script
    before = counts()
    for _ in range(3):
        cluster.add_workers("gcam", 1, wait=False)
    cluster.add_workers("gcam", 1)
    wait_for(
        lambda: len(job_ids(cluster)) == 4 and all(job_ids(cluster).values()),
        30,
        "four jobs submitted",
    )
    ids = job_ids(cluster)
    burst = counts.since(before)
    if array:
        assert burst["sbatch"] == 1, burst  # the whole burst is one array
        assert len({i.split("_")[0] for i in ids.values()}) == 1
        assert sorted(i.split("_")[1] for i in ids.values()) == ["0", "1", "2", "3"]
    else:
        assert burst["sbatch"] == 4, burst  # one job per worker, no array
        assert all("_" not in i for i in ids.values()) and len(set(ids.values())) == 4
    assert cluster.slurm_commands["sbatch"] == burst["sbatch"]
    assert queued(slurm, cluster) == set(ids.values())

    before = counts()
    removed = cluster.remove_workers("gcam", 2)
    assert len(removed) == 2
    assert counts.since(before)["scancel"] == 1
    kept = {ids[n] for n in ids if n not in removed}
    wait_for(lambda: queued(slurm, cluster) == kept, 30, "exactly the removed jobs to go")
    assert set(job_ids(cluster).values()) == kept
    assert cluster.targets == {"gcam": 2}

    before = counts()
    cluster.close()
    done = counts.since(before)
    assert (done["scancel"], done["sbatch"]) == (1, 0), done
    wait_for(lambda: not queued(slurm, cluster), 30, "the cluster's jobs to end")


def test_burst_is_one_array_removal_cancels_those_tasks_close_is_one_scancel(work, slurm, counts):
    # a generous window: the test is about batching, not about how fast this machine is
    with dask.config.set({"scalable.slurm.submit-window": 1.0}):
        cluster = make_cluster()
    try:
        check_burst_remove_close(slurm, counts, cluster, array=True)
    finally:
        cluster.close()


def test_without_job_arrays_one_job_per_worker_same_behaviour(work, slurm, counts):
    with dask.config.set({"scalable.slurm.submit-window": 1.0}):
        cluster = make_cluster(job_arrays=False)
    try:
        check_burst_remove_close(slurm, counts, cluster, array=False)
    finally:
        cluster.close()


def test_two_tags_in_one_burst_are_one_array_each(work, slurm, counts, make_image):
    make_image("osiris", work / "containers")
    with dask.config.set({"scalable.slurm.submit-window": 1.0}), make_cluster() as cluster:
        cluster.add_container(tag="gcam", cpus=1, memory="256M")
        cluster.add_container(tag="osiris", cpus=1, memory="256M")
        before = counts()
        cluster.add_workers("gcam", 3, wait=False)
        cluster.add_workers("osiris", 2)
        wait_for(
            lambda: len(job_ids(cluster)) == 5 and all(job_ids(cluster).values()),
            30,
            "five jobs submitted",
        )
        assert counts.since(before)["sbatch"] == 2
        bases = {}
        for name, job_id in job_ids(cluster).items():
            bases.setdefault(name.split("-")[0], set()).add(job_id.split("_")[0])
        assert len(bases["gcam"]) == len(bases["osiris"]) == 1 and bases["gcam"] != bases["osiris"]


def test_workers_per_job_packs_workers_with_their_share(work, slurm, counts):
    cluster = make_cluster(workers_per_job=2)
    try:
        cluster.add_container(tag="gcam", cpus=4, memory="2G")
        script = cluster.job_script("gcam")
        assert "#SBATCH --cpus-per-task=4" in script and "#SBATCH --mem=2G" in script
        before = counts()
        cluster.add_workers("gcam", 2)
        assert counts.since(before)["sbatch"] == 1
        assert len(queued(slurm, cluster)) == 1  # one job holds both workers
        assert cluster.targets == {"gcam": 2}
        with ScalableClient(cluster) as client:
            client.wait_for_workers(2, timeout=120)
            workers = client.scheduler_info(n_workers=-1)["workers"].values()
            assert sorted(w["nthreads"] for w in workers) == [2, 2]
            assert all(w["memory_limit"] == 2**30 for w in workers)
            assert all(w["resources"] == {"gcam": 1} for w in workers)
            assert client.submit(sum, [1, 2], tag="gcam").result(timeout=60) == 3
            status = cluster.tag_status()["gcam"]
            assert (status["target"], status["running"]) == (2, 2)
        before = counts()
        cluster.remove_workers("gcam", 2)
        assert counts.since(before)["scancel"] == 1
        wait_for(lambda: not queued(slurm, cluster), 30, "the packed job to be cancelled")
    finally:
        cluster.close()


def test_cpus_not_shared_evenly_by_packed_workers_is_refused(work, slurm, counts):
    with make_cluster(workers_per_job=2) as cluster:
        cluster.add_container(tag="gcam", cpus=3, memory="1G")
        before = counts()
        with pytest.raises(
            ValueError, match="cpus=3 cannot be shared by workers_per_job=2: use a multiple of 2"
        ):
            cluster.add_workers("gcam", 2)
        assert counts.since(before)["sbatch"] == 0  # refused before anything reached Slurm
        assert cluster.targets == {"gcam": 0}


def test_a_burst_of_one_is_a_plain_job_with_its_log(work, slurm, counts):
    """One worker goes as a plain job (it starts sooner than an array of one), logs found."""
    with make_cluster() as cluster:
        cluster.add_container(tag="gcam", cpus=1, memory="256M")
        before = counts()
        cluster.add_workers("gcam", 1)
        (job_id,) = job_ids(cluster).values()
        assert "_" not in job_id and counts.since(before)["sbatch"] == 1
        with ScalableClient(cluster) as client:
            client.wait_for_workers(1, timeout=180)
            assert client.submit(lambda: 6 * 7, tag="gcam").result(timeout=60) == 42
        log = cluster._log_path(next(iter(cluster.workers.values())))
        assert log.endswith(f"-{job_id}.log") and os.path.exists(log)
        (text,) = cluster.logs("gcam").values()
        assert "gcam-0" in text or "Starting Worker" in text, text
        cluster.add_workers("gcam", 2)  # the next burst is an array again
        assert sorted(i.split("_")[1] for n, i in job_ids(cluster).items() if i != job_id) == [
            "0",
            "1",
        ]
