"""A tag's own Slurm options: partition, account, walltime, GPUs (issue 15 item 3)."""

from __future__ import annotations

import dask
import pytest

from scalable import LocalCluster
from scalable.containers import ContainerError
from scalable.slurm_jobs import SubmitError
from scalable.tag_options import refused_option, tag_options


def test_options_are_checked_before_anything_is_submitted():
    assert tag_options("gcam", {"queue": "debug", "gpus": 2}, {}, True) == {
        "queue": "debug",
        "gpus": 2,
    }
    # keywords win over the config's scalable.containers.<tag>
    assert tag_options(
        "gcam", {"walltime": "01:00:00"}, {"walltime": "00:10:00", "account": "GCIMS"}, True
    ) == {"account": "GCIMS", "walltime": "01:00:00"}
    for given, message in (
        (
            {"gpus": 0},
            r"gpus=0 must be a whole number of GPUs per worker, 1 or more: e\.g\. "
            r"cluster\.add_container\('gcam', \.\.\., gpus=1\)",
        ),
        ({"walltime": "soon"}, r"container 'gcam': walltime='soon' is not a Slurm time"),
        ({"queue": "a b"}, r"queue='a b' is not a Slurm partition name"),
        ({"job_extra_directives": "--qos=high"}, r"job_extra_directives must be a list of lines"),
    ):
        with pytest.raises(ContainerError, match=message):
            tag_options("gcam", given, {}, True)
    with pytest.raises(
        ContainerError,
        match=r"queue= is a Slurm option and this cluster runs "
        r"workers locally",
    ):
        tag_options("gcam", {"queue": "debug"}, {}, False)


def test_a_refusal_names_the_option():
    said = "sbatch: error: invalid partition specified: nope"
    assert refused_option(said, {"queue": "nope"}) == "queue='nope'"
    assert refused_option("Requested time limit is invalid", {}) == "walltime="
    assert refused_option("Invalid generic resource (gres) specification", {"gpus": 2}) == "gpus=2"


def test_a_local_cluster_refuses_slurm_options(tmp_path):
    with LocalCluster(work_dir=str(tmp_path)) as cluster:
        with pytest.raises(ContainerError, match="walltime= is a Slurm option"):
            cluster.add_container("gcam", walltime="01:00:00")
        assert cluster.containers == {}


# -- on the real test Slurm ----------------------------------------------------------------------
@pytest.fixture
def slurm_cluster(tmp_path, apptainer, make_image, slurm):
    from scalable import SlurmCluster

    for tag in ("gcam", "osiris", "hector"):
        make_image(tag, tmp_path / "containers")
    with SlurmCluster(
        queue="slurm",
        walltime="02:00:00",
        account=None,
        work_dir=str(tmp_path),
        interface="lo",
        job_extra_directives=["--comment=cluster"],
    ) as cluster:
        yield cluster


@pytest.mark.slurm
def test_job_script_shows_each_tags_own_options(slurm_cluster):
    cluster = slurm_cluster
    cluster.add_container(
        "gcam",
        cpus=1,
        memory="512M",
        queue="debug",
        walltime="00:20:00",
        gpus=2,
        job_extra_directives=["--qos=normal"],
        job_script_prologue=["export GCAM_READY=1"],
    )
    cluster.add_container("osiris", cpus=1, memory="512M")
    gcam, osiris = cluster.job_script("gcam"), cluster.job_script("osiris")
    assert "#SBATCH -p debug" in gcam and "#SBATCH -t 00:20:00" in gcam
    assert "#SBATCH --gpus=2" in gcam and "#SBATCH --qos=normal" in gcam
    assert "#SBATCH --comment=cluster" in gcam  # the cluster's options stay
    assert "export GCAM_READY=1" in gcam
    # its walltime drives its own lifetime (20 min minus the 3 min margin)
    assert "--lifetime 1020s" in gcam
    assert "#SBATCH -p slurm" in osiris and "#SBATCH -t 02:00:00" in osiris
    assert "--gpus" not in osiris and "GCAM_READY" not in osiris and "--lifetime 7020s" in osiris
    status = cluster.tag_status()
    assert (status["gcam"]["queue"], status["gcam"]["walltime"], status["gcam"]["gpus"]) == (
        "debug",
        "00:20:00",
        2,
    )
    assert "queue" not in status["osiris"]
    with dask.config.set({"scalable.slurm.gpu-directive": "--gres=gpu:{n}"}):
        assert "#SBATCH --gres=gpu:2" in cluster.job_script("gcam")


@pytest.mark.slurm
def test_config_gives_a_tags_options(slurm_cluster):
    with dask.config.set(
        {"scalable.containers": {"hector": {"queue": "debug", "walltime": "00:15:00"}}}
    ):
        slurm_cluster.add_container("hector", cpus=1, memory="512M")
    script = slurm_cluster.job_script("hector")
    assert "#SBATCH -p debug" in script and "#SBATCH -t 00:15:00" in script


@pytest.mark.slurm
def test_a_refused_tag_names_its_option(slurm_cluster):
    cluster = slurm_cluster
    cluster.add_container("gcam", cpus=1, memory="512M", queue="nope")
    with pytest.raises(
        SubmitError,
        match=r"Slurm refused the 'gcam' workers: .*partition.*"
        r"Check the tag's own queue='nope' "
        r"\(cluster\.add_container\('gcam', \.\.\., queue=\.\.\.\)\)",
    ):
        cluster.add_workers("gcam", 1)
    assert cluster.targets == {"gcam": 0} and not cluster.workers
