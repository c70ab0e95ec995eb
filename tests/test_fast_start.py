"""How workers start: packed jobs fork their workers from a warm process; ``nanny=False``.

The job-script and worker-spec tests need no service; the others run tagged tasks on the real
test Slurm (with the bubblewrap apptainer stand-in) or on local processes, and ask each worker
which process it runs in.
"""

import os

import pytest

from scalable import LocalCluster, ScalableClient, SlurmCluster
from scalable.local import ContainerWorker
from scalable.slurm import FORKSERVER_VAR
from test_slurm_cluster import cluster_jobs, wait_for


@pytest.fixture
def work(tmp_path, make_image, apptainer, monkeypatch):
    for tag in ("gcam", "stitches"):
        make_image(tag, tmp_path / "containers")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def make_cluster(**kw):
    return SlurmCluster(queue="slurm", walltime="00:10:00", interface="lo", **kw)


def probe():
    """A function telling what a task sees of its process (nested: it travels by value, as
    the workers cannot import this module)."""

    def process_of_worker(_=None, dask_worker=None):
        import psutil
        from distributed import get_worker

        me = psutil.Process()
        return {
            "name": (dask_worker or get_worker()).name,
            "pid": me.pid,
            "cmdline": " ".join(me.cmdline()),
            "parent": " ".join(me.parent().cmdline()),
        }

    return process_of_worker


# -- job-script text (no service) ---------------------------------------------------------------
def test_packed_job_script_forks_its_workers_from_the_forkserver(work):
    with make_cluster(workers_per_job=4) as cluster:
        cluster.add_container(tag="gcam", cpus=8, memory="8G", env={"OMP_NUM_THREADS": "2"})
        lines = cluster.job_script("gcam").splitlines()
        worker = lines[-1]
        # one process per job imports Dask; its nannies fork their workers from the server
        # (the variable is passed into the container as the tag's env is)
        assert f"{FORKSERVER_VAR}=forkserver" in worker
        assert "OMP_NUM_THREADS=2" in worker
        for arg in (
            "--nworkers 4",
            "--nanny",
            "--nthreads 2",
            "--memory-limit 2048MiB",
            "--resources gcam=1",
            "--no-dashboard --dashboard-address 127.0.0.1:0",
        ):
            assert arg in worker
        # the tag's cpus and memory stay the job's
        assert "#SBATCH --cpus-per-task=8" in lines and "#SBATCH --mem=8G" in lines


def test_one_worker_per_job_keeps_spawn_and_nanny_false_drops_the_nanny(work):
    with make_cluster() as cluster:
        cluster.add_container(tag="gcam", cpus=2, memory="2G")
        cluster.add_container(tag="stitches", cpus=1, memory="1G", nanny=False)
        gcam, stitches = (cluster.job_script(t).splitlines()[-1] for t in ("gcam", "stitches"))
        assert "--nanny" in gcam.split() and FORKSERVER_VAR not in gcam
        assert "--no-nanny" in stitches.split() and FORKSERVER_VAR not in stitches
        assert "--nworkers" not in stitches
    with make_cluster(nanny=False) as cluster:
        cluster.add_container(tag="gcam", cpus=2, memory="2G")
        cluster.add_container(tag="stitches", cpus=1, memory="1G", nanny=True)
        assert "--no-nanny" in cluster.job_script("gcam").split()
        assert "--nanny" in cluster.job_script("stitches").split()


def test_nanny_from_config(work):
    import dask

    with dask.config.set({"scalable.slurm.nanny": False}), make_cluster() as cluster:
        cluster.add_container(tag="gcam", cpus=1, memory="1G")
        assert "--no-nanny" in cluster.job_script("gcam").split()


def test_bad_nanny_is_refused_before_anything_is_added(work):
    with pytest.raises(ValueError, match="nanny='no' must be True or False"):
        make_cluster(nanny="no")
    with pytest.raises(
        ValueError,
        match="nanny=False starts one worker per job, but this "
        "cluster packs workers_per_job=2: keep the nanny",
    ):
        make_cluster(workers_per_job=2, nanny=False)
    with make_cluster(workers_per_job=2) as cluster:
        with pytest.raises(
            ValueError,
            match="workers_per_job=2: keep the nanny or use a cluster with workers_per_job=1",
        ):
            cluster.add_container(tag="gcam", cpus=2, memory="1G", nanny=False)
        assert cluster.containers == {}
        with pytest.raises(ValueError, match="nanny=0 must be True or False"):
            cluster.add_container(tag="gcam", cpus=2, memory="1G", nanny=0)
        assert cluster.containers == {}


def test_local_nanny_false_is_one_dask_worker_process(tmp_path):
    with LocalCluster(work_dir=str(tmp_path), nanny=False) as cluster:
        cluster.add_container(tag="a", cpus=2, memory="1G", env={"WHO": "a"})
        cluster.add_container(tag="b", cpus=1, memory="1G", nanny=True)
        a, b = cluster._worker_spec("a", "a-0"), cluster._worker_spec("b", "b-0")
        assert a["cls"] is ContainerWorker and "--no-nanny" in a["options"]["argv"]
        assert a["options"]["env"]["WHO"] == "a"
        assert b["cls"].__name__ == "Nanny"


# -- started for real ----------------------------------------------------------------------------
@pytest.mark.slurm
def test_packed_workers_are_forked_from_a_warm_server_and_run_tagged_tasks(work, slurm):
    with make_cluster(workers_per_job=2) as cluster:
        cluster.add_container(tag="gcam", cpus=2, memory="1G")
        cluster.add_workers("gcam", 4)
        assert len(cluster_jobs(slurm, cluster)) == 2  # two jobs of two workers
        with ScalableClient(cluster) as client:
            client.wait_for_workers(4, timeout=240)
            process_of_worker = probe()
            seen = client.run(process_of_worker)
            assert len(seen) == 4
            for info in seen.values():
                # the worker is a child of multiprocessing's forkserver, not a spawned Python
                assert "multiprocessing.forkserver" in info["parent"], info
                assert "spawn_main" not in info["cmdline"], info
            workers = client.scheduler_info(n_workers=-1)["workers"].values()
            assert sorted(w["nthreads"] for w in workers) == [1, 1, 1, 1]
            assert all(w["memory_limit"] == 2**29 for w in workers)
            futures = client.map(process_of_worker, range(8), tag="gcam")
            assert {f.result(timeout=120)["name"].split("-")[0] for f in futures} == {"gcam"}


@pytest.mark.slurm
def test_nanny_false_workers_run_tagged_tasks_in_the_jobs_own_process(work, slurm):
    with make_cluster() as cluster:
        cluster.add_container(tag="gcam", cpus=1, memory="512M", nanny=False)
        cluster.add_container(tag="stitches", cpus=1, memory="512M")
        cluster.add_workers("gcam", 2)
        cluster.add_workers("stitches", 1)
        with ScalableClient(cluster) as client:
            client.wait_for_workers(3, timeout=240)
            process_of_worker = probe()
            gcam = [client.submit(process_of_worker, i, tag="gcam") for i in range(4)]
            for info in (f.result(timeout=120) for f in gcam):
                assert info["name"].startswith("gcam-")
                # the task runs in the process the job started: dask worker itself
                assert "distributed.cli.dask_worker" in info["cmdline"], info
                assert "--no-nanny" in info["cmdline"], info
            other = client.submit(process_of_worker, tag="stitches").result(timeout=120)
            assert "distributed.cli.dask_worker" not in other["cmdline"]  # under its nanny
            # a lost nanny-less worker is a lost job: recovery submits a new one
            name = gcam[0].result()["name"]
            with pytest.raises(Exception):  # noqa: B017 (the worker dies while answering)
                client.run(
                    os._exit,
                    1,
                    workers=[
                        w
                        for w, i in client.scheduler_info()["workers"].items()
                        if i["name"] == name
                    ],
                )
            wait_for(
                lambda: (
                    cluster.targets["gcam"] == 2
                    and len(
                        [
                            w
                            for w in client.scheduler_info()["workers"].values()
                            if w["name"].startswith("gcam-") and w["name"] != name
                        ]
                    )
                    == 2
                ),
                240,
                "a new gcam worker to replace the lost one",
            )
            assert client.submit(sum, [1, 2], tag="gcam").result(timeout=120) == 3


def test_local_nanny_false_workers_run_tagged_tasks(tmp_path):
    with LocalCluster(work_dir=str(tmp_path)) as cluster:
        cluster.add_container(tag="a", cpus=1, memory="1G", env={"WHO": "a"}, nanny=False)
        cluster.add_workers("a", 1)
        with ScalableClient(cluster) as client:
            client.wait_for_workers(1, timeout=120)
            info = client.submit(probe(), tag="a").result(timeout=60)
            assert "--no-nanny" in info["cmdline"]
            assert (
                client.submit(lambda k: os.environ.get(k), "WHO", tag="a").result(timeout=60) == "a"
            )
