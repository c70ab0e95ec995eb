"""SlurmCluster end to end on the real test Slurm, with the bubblewrap apptainer stand-in."""

import os
import shlex
import shutil

import pytest

from scalable import ScalableClient, SlurmCluster
from scalable.runner import run
from scalable.versions import worker_python
from waiting import wait_for

pytestmark = pytest.mark.slurm


def cluster_jobs(slurm, cluster):
    return [
        j
        for j in slurm.squeue("--array")
        if j["name"].startswith(f"sc-{cluster.cluster_id}-")
        and j["state"] not in ("COMPLETING", "COMPLETED", "CANCELLED")
    ]


@pytest.fixture
def work(tmp_path, make_image, apptainer, monkeypatch):
    for tag in ("gcam", "stitches"):
        make_image(tag, tmp_path / "containers")
        (tmp_path / f"{tag}_data").mkdir()
        (tmp_path / f"{tag}_data" / "input.txt").write_text(f"{tag} input")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def seed_dirs():
    """The directories of the original README's example, created if this machine lacks them."""
    made = []
    for d in ("/qfs/people/user/work/gcam-core", "/rcfs"):
        top = "/" + d.strip("/").split("/")[0]
        if not os.path.exists(top):
            made.append(top)
        os.makedirs(d, exist_ok=True)
    yield
    for top in made:
        shutil.rmtree(top, ignore_errors=True)


def test_seed_readme_flow_runs_unchanged(work, seed_dirs, slurm):
    def func1(param):
        return param, os.environ["APPTAINER_NAME"], os.path.isdir("/gcam-core")

    def func2(param):
        return param * 10, os.environ["APPTAINER_NAME"], os.path.isdir("/user")

    cluster = SlurmCluster(
        queue="slurm", walltime="02:00:00", account="GCIMS", interface="lo", silence_logs=False
    )
    try:
        cluster.add_container(
            tag="gcam",
            cpus=10,
            memory="20G",
            dirs={"/qfs/people/user/work/gcam-core": "/gcam-core", "/rcfs": "/rcfs"},
        )
        cluster.add_container(
            tag="stitches",
            cpus=6,
            memory="50G",
            dirs={"/qfs/people/user": "/user", "/rcfs": "/rcfs"},
        )
        cluster.add_worker(n=3, tag="gcam")
        cluster.add_workers(n=2, tag="stitches")
        cluster.remove_workers(n=2, tag="gcam")
        client = ScalableClient(cluster)
        fut = client.submit(func1, "gcam", tag="gcam")
        futs = client.map(func2, [1, 2, 3], tag="stitches")
        assert fut.result(timeout=120) == ("gcam", "gcam_container.sif", True)
        assert client.gather(futs) == [
            (10, "stitches_container.sif", True),
            (20, "stitches_container.sif", True),
            (30, "stitches_container.sif", True),
        ]
        cluster.walltime = "04:00:00"
        assert "#SBATCH -t 04:00:00" in cluster.job_script("gcam")
        assert "#SBATCH -A GCIMS" in cluster.job_script("gcam")
        assert cluster.targets == {"gcam": 1, "stitches": 2}
        client.close()
    finally:
        cluster.close()
    wait_for(lambda: not cluster_jobs(slurm, cluster), 30, "the cluster's jobs to end")


def test_two_tags_each_in_its_own_image_with_its_own_binds(work, slurm):
    def look(_):
        return {
            "image": os.environ.get("APPTAINER_NAME"),
            "gcam": open("/in/gcam.txt").read() if os.path.exists("/in/gcam.txt") else None,
            "stitches": open("/in/stitches.txt").read()
            if os.path.exists("/in/stitches.txt")
            else None,
            "home": os.environ.get("HOME"),
            "cwd": os.getcwd(),
        }

    os.rename(work / "gcam_data" / "input.txt", work / "gcam_data" / "gcam.txt")
    os.rename(work / "stitches_data" / "input.txt", work / "stitches_data" / "stitches.txt")
    with SlurmCluster(queue="slurm", walltime="00:20:00", interface="lo") as cluster:
        cluster.add_container(tag="gcam", cpus=1, memory="1G", dirs={"gcam_data": "/in"})
        cluster.add_container(
            tag="stitches",
            cpus=1,
            memory="1G",
            dirs={"stitches_data": "/in"},
            env={"MODEL": "stitches"},
        )
        cluster.add_workers("gcam", 2)
        cluster.add_workers("stitches", 2)
        with ScalableClient(cluster) as client:
            g = client.gather(client.map(look, range(6), tag="gcam"))
            s = client.gather(client.map(look, range(6), tag="stitches"))
    for row in g:
        assert row == {
            "image": "gcam_container.sif",
            "gcam": "gcam input",
            "stitches": None,
            "home": str(work),
            "cwd": str(work),
        }
    for row in s:
        assert row["image"] == "stitches_container.sif"
        assert (row["gcam"], row["stitches"]) == (None, "stitches input")


def test_scaling_changes_squeue_and_scheduler_and_close_spares_other_jobs(work, slurm, make_image):
    make_image("osiris", work / "containers")
    other = run(
        ["sbatch", "--parsable", "-p", "slurm", "-J", "someone-else", "--wrap", "sleep 300"]
    ).stdout.strip()
    cluster = SlurmCluster(queue="slurm", walltime="00:20:00", interface="lo")
    try:
        cluster.add_container(tag="gcam", cpus=1, memory="512M")
        cluster.add_container(tag="osiris", cpus=1, memory="512M")
        cluster.add_workers("gcam", 3)
        cluster.add_workers("osiris", 1)
        # one sbatch per tag, whatever n: job arrays
        assert cluster.slurm_commands["sbatch"] == 2
        assert len(cluster_jobs(slurm, cluster)) == 4
        client = ScalableClient(cluster)
        client.wait_for_workers(4, timeout=180)
        status = cluster.tag_status()
        assert {t: (s["target"], s["running"]) for t, s in status.items()} == {
            "gcam": (3, 3),
            "osiris": (1, 1),
        }
        cluster.remove_workers("gcam", 2)
        wait_for(
            lambda: (
                len(
                    [
                        w
                        for w in client.scheduler_info()["workers"].values()
                        if w["name"].startswith("gcam-")
                    ]
                )
                == 1
            ),
            30,
            "gcam workers to go",
        )
        wait_for(
            lambda: len([j for j in cluster_jobs(slurm, cluster) if "gcam" in j["name"]]) == 1,
            30,
            "gcam jobs to be cancelled",
        )
        cluster.scale(3, tag="osiris")
        client.wait_for_workers(4, timeout=180)
        assert cluster.targets == {"gcam": 1, "osiris": 3}
        client.close()
    finally:
        before = cluster.slurm_commands.get("scancel", 0)
        cluster.close()
    assert cluster.slurm_commands["scancel"] - before == 1  # close() is one scancel
    wait_for(lambda: not cluster_jobs(slurm, cluster), 30, "the cluster's jobs to end")
    assert other in {j["job_id"] for j in slurm.squeue()}  # the user's other job survives
    run(["scancel", other])


def test_invalid_partition_and_oversize_memory_raise_at_add_workers(work, slurm):
    with SlurmCluster(queue="nope", walltime="00:10:00", interface="lo") as cluster:
        cluster.add_container(tag="gcam", cpus=1, memory="1G")
        with pytest.raises(RuntimeError, match="(?i)invalid partition"):
            cluster.add_workers("gcam", 2)
        assert cluster.targets == {"gcam": 0} and cluster.workers == {}
        assert "invalid partition" in cluster.last_error.lower()
    with SlurmCluster(queue="slurm", walltime="00:10:00", interface="lo") as cluster:
        cluster.add_container(
            tag="big", cpus=1, memory="500G", path=str(work / "containers" / "gcam_container.sif")
        )
        with pytest.raises(
            RuntimeError, match="(?i)Slurm refused the 'big' workers: .*memory specification"
        ):
            cluster.add_workers("big", 1)
        assert cluster.targets == {"big": 0}
        assert not cluster_jobs(slurm, cluster)


def test_job_script_text_and_bad_arguments(work):
    with pytest.raises(ValueError, match="walltime='2 hours' is not a Slurm time"):
        SlurmCluster(walltime="2 hours")
    cluster = SlurmCluster(
        queue="debug",
        account="GCIMS",
        walltime="01:30:00",
        interface="lo",
        job_script_prologue=["module load apptainer"],
        job_extra_directives=["--qos=high"],
        death_timeout=30,
    )
    try:
        cluster.add_container(
            tag="gcam",
            cpus=4,
            memory="8G",
            dirs={"gcam_data": "/data"},
            env={"OMP_NUM_THREADS": "4"},
        )
        script = cluster.job_script("gcam")
        lines = script.splitlines()
        assert lines[0] == "#!/usr/bin/env bash"
        for directive in (
            f"#SBATCH -J sc-{cluster.cluster_id}-gcam",
            "#SBATCH -p debug",
            "#SBATCH -A GCIMS",
            "#SBATCH --cpus-per-task=4",
            "#SBATCH --mem=8G",
            "#SBATCH -t 01:30:00",
            "#SBATCH --qos=high",
            f"#SBATCH -o {work}/logs/%x-%A_%a.log",
        ):
            assert directive in lines
        assert "module load apptainer" in lines
        assert "SCALABLE_WORKER_NAME=${SCALABLE_NAMES[${SLURM_ARRAY_TASK_ID:-0}]}" in lines
        worker = lines[-1]
        assert worker.startswith(
            f"env APPTAINERENV_OMP_NUM_THREADS=4 "
            f"'APPTAINERENV_DASK_DISTRIBUTED__WORKER__HTTP__ROUTES=[]' "
            f"apptainer exec --bind {work}/gcam_data:/data "
            f"--home {work} --pwd {work} {work}/containers/gcam_container.sif "
            f"{shlex.join(worker_python('python'))} -m distributed.cli.dask_worker {cluster.scheduler_address} --name ${{SCALABLE_WORKER_NAME}}"
        )
        for arg in (
            "--nthreads 4",
            "--memory-limit 8192MiB",
            "--death-timeout 30",
            "--resources gcam=1",
            "--lifetime",
            "--interface lo",
            "--no-dashboard",
        ):
            assert arg in worker
        # TLS by default: the worker's credentials are files in the cluster's private directory
        tls = cluster._tls.directory
        assert cluster.scheduler_address.startswith("tls://")
        assert os.path.dirname(tls) == f"{work}/.scalable/tls"
        for arg in (
            "--protocol tls://",
            f"--tls-ca-file {tls}/",
            f"--tls-cert {tls}/",
            f"--tls-key {tls}/",
        ):
            assert arg in worker
        with pytest.raises(KeyError, match="tag 'hector' was never added"):
            cluster.job_script("hector")
        with pytest.raises(ValueError, match="walltime"):
            cluster.walltime = "soon"
        assert cluster.walltime == "01:30:00"
    finally:
        cluster.close()


def test_only_the_scheduler_listens_beyond_loopback(work, slurm):
    def http_hosts(dask_worker=None, dask_scheduler=None):
        server = (dask_worker or dask_scheduler).http_server
        return sorted({sock.getsockname()[0] for sock in server._sockets.values()})

    with SlurmCluster(queue="slurm", interface="lo") as cluster:
        cluster.add_container(tag="gcam", cpus=1, memory="512M")
        assert "--dashboard-address 127.0.0.1:0" in cluster.job_script("gcam")
        cluster.add_workers("gcam", 2)
        with ScalableClient(cluster) as client:
            client.wait_for_workers(2, timeout=180)
            # dashboards (the scheduler's and each worker's HTTP server) stay on loopback
            assert client.run_on_scheduler(http_hosts) == ["127.0.0.1"]
            assert list(client.run(http_hosts).values()) == [["127.0.0.1"], ["127.0.0.1"]]
