"""Configuration the Dask way: packaged defaults in dask.config, user overrides, kwargs win."""

import os

import dask
import yaml

import scalable
from scalable import config


def test_packaged_defaults_are_loaded():
    fn = os.path.join(os.path.dirname(scalable.__file__), "scalable.yaml")
    with open(fn) as f:
        shipped = yaml.safe_load(f)["scalable"]
    assert dask.config.get("scalable.slurm.walltime") == shipped["slurm"]["walltime"]
    assert dask.config.get("scalable.container.runtime") == "apptainer"
    # the scheduler's dashboard stays on loopback by default
    assert dask.config.get("scalable.slurm.dashboard-address").startswith("127.0.0.1:")


def test_user_config_and_kwargs():
    with dask.config.set({"scalable.slurm.queue": "short"}):
        assert config.get("slurm.queue") == "short"
        assert config.get("slurm.queue", "long") == "long"  # keyword arguments win


def test_predefined_containers_need_no_add_container(tmp_path, make_image):
    from scalable import LocalCluster

    make_image("hector", tmp_path / "containers")
    with dask.config.set(
        {
            "scalable.containers": {
                "hector": {"cpus": 2, "memory": "1G"},
                "missing": {"path": "containers/none.sif"},
            }
        }
    ):
        with LocalCluster(work_dir=str(tmp_path)) as cluster:
            assert list(cluster.containers) == [
                "hector"
            ]  # 'missing' names no existing image: skipped
            assert cluster.containers["hector"].cpus == 2
