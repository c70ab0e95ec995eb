"""Preflight of container specs: every mistake is refused with a sentence saying what to change,
before anything is submitted."""

import warnings

import pytest

from scalable.containers import ContainerError, make_spec, parse_memory, slurm_memory
from scalable.runtimes import Apptainer, ContainerRuntime, Singularity, get_runtime


@pytest.fixture
def work(tmp_path, make_image):
    make_image("gcam", tmp_path / "containers")
    (tmp_path / "data").mkdir()
    return tmp_path


def spec(work, tag="gcam", runtime=None, **kw):
    return make_spec(tag, work_dir=str(work), runtime=runtime, **kw)


def test_defaults_image_under_work_dir(work):
    s = spec(work, cpus=4, memory="2G", dirs={"data": "/data"}, env={"A": 1})
    assert s.image == str(work / "containers" / "gcam_container.sif")
    assert (s.cpus, s.memory) == (4, 2 * 2**30)
    assert s.dirs == {str(work / "data"): "/data"}
    assert s.env == {"A": "1"}


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"tag": "stitches"}, "image"),
        ({"path": "nope.sif"}, "nope.sif"),
        ({"dirs": {"/no/such/dir": "/x"}}, "bind source '/no/such/dir' does not exist"),
        ({"dirs": {"data": "relative"}}, "absolute path"),
        ({"memory": "lots"}, "memory='lots' is not a size"),
        ({"memory": "-3G"}, "is not a size"),
        ({"cpus": 0}, "cpus=0 must be a positive whole number"),
        ({"cpus": 2.5}, "cpus=2.5"),
        ({"cpus": True}, "cpus=True"),
        ({"tag": ""}, "tag '' is not valid"),
        ({"tag": "gcam-7"}, "tag='gcam_7'"),
        ({"tag": "7up"}, "starting with a letter"),
        ({"env": {"BAD-NAME": "1"}}, "not a valid environment variable"),
        # sizes that are no size: nothing below 1 MiB, nothing infinite or absurd
        ({"memory": "0G"}, "between 1 MiB and 1 PiB"),
        ({"memory": "0.0001K"}, "between 1 MiB and 1 PiB"),
        ({"memory": 0.5}, "between 1 MiB and 1 PiB"),
        ({"memory": ""}, "between 1 MiB and 1 PiB"),
        ({"memory": "1e100G"}, "between 1 MiB and 1 PiB"),
        ({"memory": float("inf")}, "between 1 MiB and 1 PiB"),
        ({"memory": float("nan")}, "between 1 MiB and 1 PiB"),
        # a trailing newline is not part of a valid tag (re.match with $ let it through)
        ({"tag": "gcam\n"}, "tag 'gcam\\n' is not valid"),
        ({"env": {"A\n": "1"}}, "not a valid environment variable"),
        ({"env": {"A": "x\0y"}}, "NUL byte"),
        # the runtime splits binds at "," and ":": "/data,/etc:/stolen" would mount /etc
        ({"dirs": {"data,/etc": "/stolen"}}, "contains ','"),
        ({"dirs": {"data": "/in:/x"}}, "contains ':'"),
        ({"dirs": {"da\0ta": "/in"}}, "a NUL byte"),
        ({"dirs": {"data": 5}}, "must be path strings"),
        ({"path": 5}, "path=5 is not a file path"),
        ({"path": "/x\0.sif"}, "is not a file path"),
        ({"path": "containers"}, "is not an image file"),
    ],
)
def test_bad_input_says_what_to_change(work, kwargs, needle):
    tag = kwargs.pop("tag", "gcam")
    with pytest.raises(ContainerError) as e:
        spec(work, tag=tag, **kwargs)
    assert needle in str(e.value)
    if tag and tag[0].isalpha() and "-" not in tag:
        assert repr(tag) in str(e.value)  # the message names the tag


def test_runtime_missing_is_a_warning_naming_compute_nodes(work):
    with pytest.warns(UserWarning, match="not on this machine's PATH.*compute nodes"):
        spec(work, runtime=ContainerRuntime("no-such-runtime"))


def test_runtime_missing_is_no_warning_with_a_job_prologue(work, monkeypatch):
    from scalable import SlurmCluster

    (work / "containers").mkdir(exist_ok=True)
    (work / "containers" / "gcam_container.sif").write_text("image")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no apptainer here
    with SlurmCluster(
        queue="slurm",
        interface="lo",
        work_dir=str(work),
        job_script_prologue=["module load apptainer"],
    ) as cluster:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            cluster.add_container(tag="gcam")
    with SlurmCluster(queue="slurm", interface="lo", work_dir=str(work)) as cluster:
        with pytest.warns(UserWarning, match="not on this machine's PATH"):
            cluster.add_container(tag="gcam")


def test_runtime_present_no_warning(work, apptainer):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        spec(work, runtime=Apptainer())


def test_memory_units():
    assert parse_memory("20G") == 20 * 2**30  # Slurm's G is binary
    assert parse_memory("512M") == 512 * 2**20
    assert parse_memory("2GiB") == 2 * 2**30
    assert parse_memory("1.5 GB") == 1_500_000_000
    assert slurm_memory(20 * 2**30) == "20G"
    assert slurm_memory(1) == "1M"


def test_exec_argv_is_a_list_with_binds_env_home_cwd():
    argv = Singularity().exec_argv(
        "/w/i.sif",
        ["python", "-c", "print(1); print(2)"],
        binds={"/a b": "/x"},
        env={"K": "v w,X=1"},
        home="/w",
        cwd="/w",
    )
    # variables travel whole, as SINGULARITYENV_K: "--env K=v w,X=1" would set X too
    assert argv == [
        "env",
        "SINGULARITYENV_K=v w,X=1",
        "singularity",
        "exec",
        "--bind",
        "/a b:/x",
        "--home",
        "/w",
        "--pwd",
        "/w",
        "/w/i.sif",
        "python",
        "-c",
        "print(1); print(2)",
    ]


def test_runtime_lookup_by_entry_point_and_by_name():
    assert isinstance(get_runtime("apptainer"), Apptainer)
    assert isinstance(get_runtime("singularity"), Singularity)
    other = get_runtime("/opt/site/apptainer-wrapper", ["--nv"])
    assert other.exec_argv("i", ["x"])[:3] == ["/opt/site/apptainer-wrapper", "exec", "--nv"]
