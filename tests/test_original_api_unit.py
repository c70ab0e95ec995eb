"""The original scalable's API as its users call it: the parts that need no Slurm."""

import glob
import json
import os
import subprocess
import sys
import warnings

import pytest

from scalable import LocalCluster, ScalableClient, original
from scalable.containers import ContainerError, check_tag, make_spec
from scalable.tagged import UnknownTagError
from waiting import wait_for


def test_star_import_gives_exactly_the_original_names():
    ns = {}
    exec("from scalable import *", ns)  # noqa: S102  (a star import needs module scope)
    names = {k for k in ns if k != "__builtins__"}
    from dask_jobqueue import JobQueueCluster
    from distributed import Security, get_worker

    assert names == {
        "SlurmCluster",
        "ScalableClient",
        "get_worker",
        "Security",
        "JobQueueCluster",
        "cacheable",
        "GenericType",
        "FileType",
        "DirType",
        "ValueType",
        "ObjectType",
        "UtilityType",
    }
    assert (ns["get_worker"], ns["Security"], ns["JobQueueCluster"]) == (
        get_worker,
        Security,
        JobQueueCluster,
    )
    assert issubclass(ns["SlurmCluster"], JobQueueCluster)


def test_tags_are_case_insensitive():
    assert check_tag("GCAM") == "gcam"
    spec = make_spec("Stitches", work_dir="/", runtime=None, require_image=False)
    assert spec.tag == "stitches"
    with pytest.raises(ContainerError, match=r"e\.g\. tag='my_model'"):
        check_tag("My-Model")


def test_config_presets_match_tags_case_insensitively(tmp_path):
    import dask

    with dask.config.set({"scalable.containers": {"GCAM": {"cpus": 3, "memory": "2G"}}}):
        spec = make_spec("gcam", work_dir=str(tmp_path), runtime=None, require_image=False)
    assert (spec.cpus, spec.memory) == (3, 2 * 2**30)


def test_preload_script_paths(tmp_path):
    (tmp_path / "pre.py").write_text("")
    data = tmp_path.parent / f"{tmp_path.name}-data"
    data.mkdir()
    (data / "p2.py").write_text("")
    elsewhere = tmp_path.parent / f"{tmp_path.name}-other.py"
    elsewhere.write_text("")
    image = tmp_path / "img.sif"
    image.write_text("")

    def spec(preload, dirs=None):
        return make_spec(
            "gcam",
            dirs=dirs,
            path=str(image),
            preload_script=preload,
            work_dir=str(tmp_path),
            runtime=None,
        )

    assert spec("pre.py").preload == str(tmp_path / "pre.py")  # the work dir is mounted
    assert spec(str(data / "p2.py"), {str(data): "/in"}).preload == "/in/p2.py"  # via a bind
    s = spec(str(elsewhere))  # bound at its own path
    assert s.preload == str(elsewhere) and s.dirs[str(elsewhere)] == str(elsewhere)
    assert spec("my_site.preload").preload == "my_site.preload"  # a module in the image
    with pytest.raises(ContainerError, match="preload_script .*missing.py' is not a file"):
        spec("missing.py")
    assert spec("pre.py").describe()["preload"] == str(tmp_path / "pre.py")


def test_original_keywords_are_taken_with_their_meaning_or_a_note():
    original._noted.clear()
    kwargs = {
        "logs_location": "mylogs",
        "suppress_logs": True,
        "worker_env_vars": {"A": 1},
        "cpus": 4,
        "memory": "8G",
        "run_scripts_path": "rs",
        "use_run_scripts": False,
        "comm_port": 1919,
        "config_overwrite": False,
        "security": None,
    }
    with pytest.warns(original.OriginalKeywordNote) as notes:
        opts = original.take_original_keywords(kwargs)
    said = " ".join(str(n.message) for n in notes)
    assert "comm_port" in said and "relay" in said
    assert "config_overwrite" in said and "scalable.containers" in said
    assert kwargs == {"security": None}  # the rest goes on to dask-jobqueue
    assert opts.log_directory == "mylogs" and opts.quiet_workers
    assert opts.defaults == {"cpus": 4, "memory": "8G"}
    assert (opts.run_scripts_path, opts.use_run_scripts) == ("rs", False)
    assert original.worker_env(opts, {"B": "2", "A": "3"}) == {
        "A": "3",
        "B": "2",
        "DASK_LOGGING__DISTRIBUTED": "error",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the note is shown once per process
        original.take_original_keywords({"comm_port": 1919})
    with pytest.raises(ValueError, match="pass only one of them"):
        original.take_original_keywords({"logs_location": "a"}, log_directory="b")
    with pytest.raises(TypeError, match="worker_env_vars=.*must be a dict"):
        original.take_original_keywords({"worker_env_vars": ["A=1"]})
    with pytest.raises(TypeError, match="job_cls is not supported"):
        original.take_original_keywords({"job_cls": object})
    from scalable import SlurmCluster

    with pytest.warns(
        original.OriginalKeywordNote, match="set_default_request_quantity.*workers_per_job"
    ):
        SlurmCluster.set_default_request_quantity(5)


@pytest.fixture(scope="module")
def local():
    with LocalCluster() as cluster:
        cluster.add_container("gcam")
        cluster.add_container("Stitches", None, None, 1, "512M")
        yield cluster


def test_positional_order_is_the_originals(local, tmp_path):
    assert local.containers["stitches"].memory == 512 * 2**20
    with pytest.raises(
        TypeError, match=r"dirs second.*add_container\('hector', cpus=4, memory='8G'\)"
    ):
        local.add_container("hector", 4, "8G")
    with pytest.raises(
        TypeError,
        match=r"add_workers\(2, 'gcam'\) reads 2 as the tag; write "
        r"cluster\.add_workers\(tag='gcam', n=2\)",
    ):
        local.add_workers(2, "gcam")
    with pytest.raises(TypeError, match=r"remove_workers\(n=3\)"):
        local.remove_workers(3)
    assert local.add_workers("GCAM", 0) == []
    assert local.add_worker(tag="gcam") == []  # n defaults to 0, as in the original
    assert local.add_workers("gcam", 1, wait=False) == ["gcam-0"]
    with pytest.warns(UserWarning, match=r"tag 'gcam' has only 1 worker\(s\), so all of them"):
        assert local.remove_workers("gcam", 5) == ["gcam-0"]
    assert local.targets["gcam"] == 0


def test_submit_and_map_take_n_1_and_refuse_more(local):
    client = ScalableClient.__new__(ScalableClient)
    client._tagged_cluster = local
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert client._resources_for("gcam", 1, {}, "submit") == {"resources": {"gcam": 1}}
    with pytest.raises(
        ValueError, match=r"submit\(\.\.\., n=2\).*or run several tasks with client\.map"
    ):
        client._resources_for("gcam", 2, {}, "submit")
    with pytest.raises(ValueError, match=r"map\(\.\.\., n=3\) asks for 3 workers") as e:
        client._resources_for("gcam", 3, {}, "map")
    assert "client.map" not in str(e.value)
    with pytest.raises(ValueError, match="leave it out or pass n=1"):
        client._resources_for("gcam", 0, {}, "map")
    with pytest.raises(UnknownTagError, match="tag 'osiris' is not a container"):
        client._resources_for("osiris", 1, {}, "submit")


def test_the_rest_scale_route_takes_any_case(local):
    # POST clusters/{id}/scale reaches the cluster through this scheduler handler
    assert local.sync(local._handle_scale, tag="GCAM", n=0) == {"status": "OK", "target": 0}
    reply = local.sync(local._handle_scale, tag="Hector", n=1)
    assert reply["status"] == "error" and "tag 'hector' was never added" in reply["message"]


def python_env(where, packages=None):
    """A Python environment of an image built elsewhere: a venv, without the host's packages
    unless ``packages`` ({name: version}) are given; those are then declared in the venv (the
    host's other packages stay visible), as an image with other versions would have them."""
    venv = subprocess.run(
        [
            sys.executable,
            "-m",
            "venv",
            "--without-pip",
            *(["--system-site-packages"] if packages else []),
            str(where),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert venv.returncode == 0, venv.stderr
    site = glob.glob(str(where / "lib" / "python*" / "site-packages"))[0]
    for name, ver in (packages or {}).items():
        info = os.path.join(site, f"{name}-{ver}.dist-info")
        os.makedirs(info)
        with open(os.path.join(info, "METADATA"), "w") as f:
            f.write(f"Metadata-Version: 2.1\nName: {name}\nVersion: {ver}\n")
    return where / "bin"


@pytest.mark.root
def test_a_local_image_without_distributed_says_so(tmp_path, apptainer):
    bin_dir = python_env(tmp_path / "env")
    (tmp_path / "containers").mkdir()
    image = tmp_path / "containers" / "bare_container.sif"
    image.write_text(json.dumps({"env": {"PATH": f"{bin_dir}:$PATH"}}))
    with LocalCluster(work_dir=str(tmp_path)) as cluster:
        cluster.add_container("bare")
        cluster.add_workers("bare", 1)
        wait_for(lambda: "bare" in cluster.tag_errors, 120, "the tag to report")
        assert cluster.tag_errors["bare"].startswith(
            f"tag 'bare' cannot start workers: its image {image} has no distributed"
        )
