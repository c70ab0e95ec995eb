"""Scripts written the way the original scalable's users write them, on the real test Slurm."""

import glob
import json
import os
import sys

import pytest

from scalable import ScalableClient, SlurmCluster, original
from scalable.containers import ContainerError
from test_original_api_unit import python_env
from waiting import wait_for

pytestmark = pytest.mark.slurm

PRELOAD = """
import os

def dask_setup(worker):
    os.environ["PRELOADED_BY"] = "gcam preload"
"""

RUN_SCRIPT = """#!/bin/sh
export RUN_SCRIPT_OF="{tag}"
exec "$@"
"""


def looker():
    """What a task sees where it runs (a local function: workers cannot import tests)."""

    def look(_=None):

        import dask

        return {
            "image": os.environ.get("APPTAINER_NAME"),
            "preload": os.environ.get("PRELOADED_BY"),
            "run_script": os.environ.get("RUN_SCRIPT_OF"),
            "env": os.environ.get("SITE_VAR"),
            "input": open("/in/input.txt").read() if os.path.exists("/in/input.txt") else None,
            "log_level": dask.config.get("logging.distributed", None),
        }

    return look


def read(path):
    with open(path) as f:
        return f.read()


@pytest.fixture
def work(tmp_path, make_image, apptainer, monkeypatch):
    for tag in ("gcam", "stitches"):
        make_image(tag, tmp_path / "containers")
        (tmp_path / f"{tag}_data").mkdir()
        (tmp_path / f"{tag}_data" / "input.txt").write_text(f"{tag} input")
    (tmp_path / "preload_gcam.py").write_text(PRELOAD)
    (tmp_path / "run_scripts").mkdir()
    for tag in ("gcam", "stitches"):
        script = tmp_path / "run_scripts" / f"{tag}_script.sh"
        script.write_text(RUN_SCRIPT.format(tag=tag))
        script.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    original._noted.clear()
    return tmp_path


def test_original_style_script_with_its_keywords(work, slurm):
    with pytest.warns(original.OriginalKeywordNote) as notes:
        cluster = SlurmCluster(
            queue="slurm",
            walltime="00:20:00",
            account="GCIMS",
            interface="lo",
            silence_logs=False,
            comm_port=1919,
            config_overwrite=False,
            logs_location="worker_logs",
            suppress_logs=False,
            worker_env_vars={"SITE_VAR": "from worker_env_vars"},
            cpus=1,
            memory="600M",
            run_scripts_path="run_scripts",
            use_run_scripts=True,
        )
    assert {str(n.message).split("(")[1].split("=")[0] for n in notes} == {
        "comm_port",
        "config_overwrite",
    }
    try:
        # positional, as in the original's docs: tag, dirs, path, cpus, memory, preload_script
        cluster.add_container("GCAM", {"gcam_data": "/in"}, None, 1, "512M", "preload_gcam.py")
        cluster.add_container("stitches", {"stitches_data": "/in"})  # the cluster's cpus/memory
        assert set(cluster.containers) == {"gcam", "stitches"}
        assert cluster.containers["stitches"].memory == 600 * 2**20
        script = cluster.job_script("Gcam")
        assert "--preload" in script and "run_scripts/gcam_script.sh python" in script
        cluster.add_workers("gcam", 2)
        cluster.add_worker("STITCHES", 1)
        client = ScalableClient(cluster)
        gcam = client.submit(looker(), tag="GCAM", n=1).result(timeout=180)
        stitches = client.gather(client.map(looker(), [1, 2], tag="Stitches", n=1))
        assert gcam == {
            "image": "gcam_container.sif",
            "preload": "gcam preload",
            "run_script": "gcam",
            "env": "from worker_env_vars",
            "input": "gcam input",
            "log_level": None,
        }
        for row in stitches:
            assert row == {
                "image": "stitches_container.sif",
                "preload": None,
                "run_script": "stitches",
                "env": "from worker_env_vars",
                "input": "stitches input",
                "log_level": None,
            }
        # logs_location: the job logs are there, with the worker's own log lines
        logs = glob.glob(str(work / "worker_logs" / "*.log"))
        assert len(logs) == 3
        assert any("Start worker" in read(p) for p in logs)
        with pytest.warns(UserWarning, match=r"tag 'gcam' has only 2 worker\(s\), so all of them"):
            cluster.remove_workers("gcam", 5)
        assert cluster.targets == {"gcam": 0, "stitches": 1}
        with pytest.raises(TypeError, match=r"write cluster\.add_workers\(tag='gcam', n=2\)"):
            cluster.add_workers(2, "gcam")
        client.close()
    finally:
        cluster.close()


def test_suppress_logs_and_run_scripts_required(work, slurm):
    with SlurmCluster(
        queue="slurm", walltime="00:20:00", interface="lo", suppress_logs=True, use_run_scripts=True
    ) as cluster:
        (work / "run_scripts" / "stitches_script.sh").unlink()
        with pytest.raises(
            ContainerError,
            match=r"use_run_scripts=True but there is no run "
            r"script .*stitches_script\.sh",
        ):
            cluster.add_container("stitches", {"stitches_data": "/in"})
        (work / "run_scripts" / "gcam_script.sh").chmod(0o644)
        with pytest.raises(ContainerError, match=r"is not executable: chmod \+x it"):
            cluster.add_container("gcam")
        assert cluster.containers == {}
        (work / "run_scripts" / "gcam_script.sh").chmod(0o755)
        cluster.add_container("gcam", {"gcam_data": "/in"}, cpus=1, memory="512M")
        cluster.add_workers("gcam", 1)
        with ScalableClient(cluster) as client:
            row = client.submit(looker(), tag="gcam").result(timeout=180)
        assert row["log_level"] == "error" and row["run_script"] == "gcam"
        log = glob.glob(str(work / "logs" / "*.log"))
        assert len(log) == 1
        assert "Start worker" not in read(log[0])


def test_without_run_scripts_directory_nothing_changes(
    tmp_path, make_image, apptainer, monkeypatch, slurm
):
    make_image("gcam", tmp_path / "containers")
    monkeypatch.chdir(tmp_path)
    with SlurmCluster(queue="slurm", walltime="00:20:00", interface="lo") as cluster:
        cluster.add_container("gcam", cpus=1, memory="512M")
        assert "_script.sh" not in cluster.job_script("gcam")
        cluster.add_workers("gcam", 1)
        with ScalableClient(cluster) as client:
            row = client.submit(looker(), tag="gcam").result(timeout=180)
        assert (row["image"], row["run_script"]) == ("gcam_container.sif", None)


def test_images_built_elsewhere_say_which_versions_differ(work, slurm):
    import cloudpickle
    import distributed

    for tag, packages in (
        ("bare", None),
        ("old", {"distributed": "2023.1.0", "cloudpickle": "2.2.1"}),
    ):
        bin_dir = python_env(work / f"{tag}_env", packages)
        (work / "containers" / f"{tag}_container.sif").write_text(
            json.dumps({"env": {"PATH": f"{bin_dir}:$PATH"}})
        )
    with SlurmCluster(
        queue="slurm", walltime="00:20:00", interface="lo", use_run_scripts=False
    ) as cluster:
        for tag in ("bare", "old", "gcam"):
            cluster.add_container(tag, cpus=1, memory="512M")
            cluster.add_workers(tag, 1)
        wait_for(
            lambda: set(cluster.tag_errors) == {"bare", "old"},
            180,
            "both mismatched tags to report",
        )
        errors = cluster.tag_errors
        want = f"distributed=={distributed.__version__} cloudpickle=={cloudpickle.__version__}"
        assert errors["bare"].startswith(
            f"tag 'bare' cannot start workers: its image {work}/containers/bare_container.sif "
            f"has no distributed (Python {sys.version_info[0]}.{sys.version_info[1]}); rebuild"
        )
        assert errors["old"].startswith(
            f"tag 'old' cannot start workers: its image {work}/containers/old_container.sif runs "
            f"distributed 2023.1.0 where the scheduler runs {distributed.__version__}, "
            f"cloudpickle 2.2.1 where the scheduler runs {cloudpickle.__version__}; rebuild"
        )
        for text in errors.values():
            assert want in text and "check-versions" in text and "\n" not in text
        status = cluster.tag_status()
        assert status["old"]["error"] == errors["old"] and status["gcam"]["error"] is None
        assert cluster.last_error in errors.values()
        # the refusal is final: no retries were submitted, and the good image still works
        assert cluster.slurm_commands["sbatch"] == 3
        with ScalableClient(cluster) as client:
            assert (
                client.submit(looker(), tag="gcam").result(timeout=180)["image"]
                == "gcam_container.sif"
            )
