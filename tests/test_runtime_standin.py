"""The apptainer stand-in (tests/bin/apptainer) behaves like Apptainer where scalable relies on it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from scalable.runtimes import ContainerRuntime


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, **kw)


def test_version(apptainer):
    assert shutil.which("apptainer") == apptainer
    assert run(["apptainer", "--version"]).stdout.startswith("apptainer version ")
    assert run(["singularity", "--version"]).stdout.startswith("singularity version ")


@pytest.mark.root
def test_binds_env_home_cwd_and_name(apptainer, make_image, tmp_path):
    image = make_image("gcam")
    data = tmp_path / "data"
    data.mkdir()
    (data / "input.txt").write_text("from the host")
    home = tmp_path / "home"
    home.mkdir()
    script = (
        "import os; print(open('input.txt').read()); print(os.getcwd()); "
        "print(os.environ['HOME']); print(os.environ['MODEL']); "
        "print(os.environ['APPTAINER_NAME']); print(os.environ['APPTAINER_CONTAINER']); "
        "open('written.txt', 'w').write('from the container')"
    )
    out = run(
        [
            "apptainer",
            "exec",
            "--bind",
            f"{data}:/model",
            "--env",
            "MODEL=gcam",
            "--home",
            str(home),
            "--pwd",
            "/model",
            image,
            sys.executable,
            "-c",
            script,
        ]
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "from the host",
        "/model",
        str(home),
        "gcam",
        "gcam_container.sif",
        image,
    ]
    assert (data / "written.txt").read_text() == "from the container"  # the bind is read-write


@pytest.mark.root
def test_exec_argv_of_the_product_runs(apptainer, make_image, tmp_path):
    # scalable.runtimes builds the argv; the stand-in must accept exactly that.
    image = make_image("stitches")
    work = tmp_path / "work"
    work.mkdir()
    argv = ContainerRuntime().exec_argv(
        image,
        ["sh", "-c", "pwd; echo $TAG; ls /work/x"],
        binds={str(work): "/work/x"},
        env={"TAG": "stitches"},
        home=str(work),
        cwd="/work/x",
    )
    (work / "marker").touch()
    out = run(argv)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["/work/x", "stitches", "marker"]


@pytest.mark.root
def test_private_tmp_hides_unbound_paths(apptainer, make_image, tmp_path):
    image = make_image("osiris")
    (tmp_path / "secret.txt").write_text("host only")
    out = run(
        [
            "apptainer",
            "exec",
            image,
            "sh",
            "-c",
            f"ls {tmp_path}/secret.txt; touch /tmp/inside; ls /tmp",
        ]
    )
    assert "No such file" in out.stderr
    # Only what the test made, plus the scalable checkout itself when it was cloned under /tmp.
    project = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    extra = [project.split("/")[2]] if project.startswith("/tmp/") else []
    assert sorted(out.stdout.split()) == sorted(["inside", *extra])
    assert not os.path.exists("/tmp/inside")


@pytest.mark.root
def test_caller_environment_kept_unless_cleanenv(apptainer, make_image, monkeypatch):
    image = make_image("hector")
    monkeypatch.setenv("SCALABLE_TEST_VAR", "kept")
    monkeypatch.setenv("APPTAINERENV_INJECTED", "yes")
    cmd = ["sh", "-c", 'echo "${SCALABLE_TEST_VAR:-unset} ${INJECTED:-unset}"']
    assert run(["apptainer", "exec", image, *cmd]).stdout.split() == ["kept", "yes"]
    assert run(["apptainer", "exec", "--cleanenv", image, *cmd]).stdout.split() == ["unset", "yes"]


@pytest.mark.root
def test_hidden_host_paths(apptainer, make_image, tmp_path):
    image = make_image("scalable")
    empty = tmp_path / "empty"
    empty.mkdir()
    sbatch = shutil.which("sbatch")
    assert sbatch, "slurm-wlm is installed on test machines"
    out = run(
        [
            "apptainer",
            "exec",
            "--bind",
            f"/dev/null:{sbatch}",
            "--bind",
            f"{empty}:/run/munge",
            image,
            "sh",
            "-c",
            "command -v sbatch || echo no-sbatch; ls -A /run/munge | wc -l",
        ]
    )
    assert out.stdout.split() == ["no-sbatch", "0"], out.stderr


def test_missing_image_is_refused(apptainer, tmp_path):
    out = run(["apptainer", "exec", str(tmp_path / "nope.sif"), "true"])
    assert out.returncode == 255
    assert out.stderr.startswith("FATAL:") and "could not open image" in out.stderr
    assert "no such file" in out.stderr


def test_missing_bind_source_is_refused(apptainer, make_image, tmp_path):
    out = run(["apptainer", "exec", "--bind", f"{tmp_path}/absent:/data", make_image("x"), "true"])
    assert out.returncode == 255
    assert "container creation failed" in out.stderr and "no such file or directory" in out.stderr


@pytest.mark.root
def test_exit_code_and_signals_reach_the_command(apptainer, make_image):
    image = make_image("basd")
    assert run(["apptainer", "exec", image, "sh", "-c", "exit 7"]).returncode == 7
    code = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(3))\n"
        "print('up', flush=True)\ntime.sleep(60)\n"
    )
    proc = subprocess.Popen(
        ["apptainer", "exec", image, sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "up"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 3  # the command handled SIGTERM itself


@pytest.mark.root
@pytest.mark.parametrize("flag", ["--cwd", "--pwd"])
def test_cwd_alias_and_default_cwd(apptainer, make_image, tmp_path, flag):
    image = make_image("tethys")
    assert run(["apptainer", "exec", flag, "/usr", image, "pwd"]).stdout.strip() == "/usr"
    # An unbound current directory under /tmp does not exist inside: start in $HOME instead.
    start = time.monotonic()
    out = run(["apptainer", "exec", image, "pwd"], cwd=tmp_path)
    assert out.stdout.strip() == os.environ["HOME"]
    assert time.monotonic() - start < 30  # does not hang


def listing(path):
    return sorted(os.listdir(path))


@pytest.mark.root
def test_bind_never_creates_directories_on_the_host(apptainer, make_image, tmp_path):
    image = make_image("demeter")
    # A destination under a host directory with other files: made in memory, the rest still seen.
    parent = Path(tempfile.mkdtemp(prefix="scalable-standin-", dir="/var/tmp"))
    try:
        (parent / "file.txt").write_text("kept\n")
        (parent / "dir").mkdir()
        (parent / "dir" / "inner").write_text("inner\n")
        (parent / "link").symlink_to("dir")
        source = tmp_path / "source"
        source.mkdir()
        (source / "marker").touch()
        target = parent / "new" / "data"
        out = run(
            [
                "apptainer",
                "exec",
                "--bind",
                f"{source}:{target}",
                image,
                "sh",
                "-c",
                f"ls {target}; cat {parent}/file.txt {parent}/link/inner; ls {parent}; "
                f"echo written > {parent}/dir/out",
            ]
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["marker", "kept", "inner", "dir", "file.txt", "link", "new"]
        assert listing(parent) == ["dir", "file.txt", "link"]  # nothing made on the host
        assert (parent / "dir" / "out").read_text() == "written\n"  # the rest is still the host's
    finally:
        shutil.rmtree(parent)
    # A new top-level directory lives only in the container's own root.
    out = run(
        [
            "apptainer",
            "exec",
            "--bind",
            f"{tmp_path}:/scalable-new/data",
            image,
            "ls",
            "-d",
            "/scalable-new/data",
        ]
    )
    assert out.returncode == 0, out.stderr
    assert not os.path.exists("/scalable-new")


@pytest.mark.root
def test_bind_below_another_bind_that_lacks_the_destination(apptainer, make_image, tmp_path):
    image = make_image("xanthos")
    outer, inner = tmp_path / "outer", tmp_path / "inner"
    for folder in (outer, inner):
        folder.mkdir()
        (folder / f"in-{folder.name}").touch()
    out = run(
        [
            "apptainer",
            "exec",
            "--bind",
            f"{outer}:/model",
            "--bind",
            f"{inner}:/model/a/b",
            "--bind",
            f"{inner}:{outer}/c",
            image,
            "sh",
            "-c",
            f"ls /model; ls /model/a/b; ls {outer}/c",
        ]
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["a", "in-outer", "in-inner", "in-inner"]
    assert listing(outer) == ["in-outer"] and listing(inner) == ["in-inner"]


@pytest.mark.root
@pytest.mark.parametrize("top", ["/home", "/srv", "/work", "/opt", "/mnt"])
def test_bind_to_a_new_path_under_an_existing_host_directory(apptainer, make_image, tmp_path, top):
    # e.g. a kernel's work directory bound at /home/kernel on a host whose /home holds other homes
    if not os.path.isdir(top):
        pytest.skip(f"{top} does not exist on this host")
    image = make_image("gcam")
    before = listing(top)
    target = f"{top}/scalable-standin-{os.getpid()}-{len(before)}"
    assert not os.path.lexists(target)
    source = tmp_path / "source"
    source.mkdir()
    (source / "marker").touch()
    out = run(
        [
            "apptainer",
            "exec",
            "--bind",
            f"{source}:{target}",
            "--pwd",
            target,
            image,
            sys.executable,
            "-c",
            f"import os; print(os.listdir('.')); print(os.listdir('{top}'))",
        ]
    )
    assert out.returncode == 0, out.stderr
    inside, top_inside = out.stdout.splitlines()
    assert inside == "['marker']"
    assert sorted(eval(top_inside)) == sorted([*before, os.path.basename(target)])
    assert listing(top) == before
