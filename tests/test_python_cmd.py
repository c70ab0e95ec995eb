"""``scalable python``: Python in the scalable image with the kernel's relay, as python3 on the HPC."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bootstrap_harness import (  # noqa: F401
    HERE,
    bootstrap_args,
    host,
    laptop,
    needs_sshd,
    run_bootstrap,
)
from scalable.kernel.python_cli import (
    UsageError,
    launcher_args,
    split,
    wrapper_text,
    write_wrapper,
)

TESTS_BIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin")
PROJECT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def work(tmp_path, monkeypatch, make_image):
    """A work dir holding the scalable image; the stand-in runtime first on PATH; relay dirs
    land in a private runtime dir, so leftovers can be counted."""
    work = tmp_path / "work"
    make_image("scalable", work / "containers")
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("PATH", f"{TESTS_BIN}:{os.environ['PATH']}")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("SCALABLE_REGISTRY_DIR", str(tmp_path / "registry"))
    monkeypatch.setenv("PYTHONPATH", PROJECT)
    monkeypatch.delenv("DASK_SCALABLE__WORK_DIRECTORY", raising=False)
    monkeypatch.chdir(work)
    return work


def read_until(fd: int, marker: bytes, out: bytes = b"", timeout: float = 120) -> bytes:
    """Read the terminal ``fd`` until ``marker`` has appeared; fail with what came if it never
    does (a wait on select, so a silent child fails the test rather than hanging it)."""
    deadline = time.monotonic() + timeout
    while marker not in out:
        left = deadline - time.monotonic()
        assert left > 0, out
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 1024)
            assert chunk, out
            out += chunk
    return out


def scalable_python(*args, **kwargs):
    return [sys.executable, "-m", "scalable.cli", "python", *args]


def test_split_leaves_pythons_own_options_alone():
    assert split(["-c", "print(1)", "--image", "x"]) == (
        {"bind": [], "env": []},
        ["-c", "print(1)", "--image", "x"],
    )
    assert split(["--work-dir", "/w", "--bind=/a", "--bind", "/b:/c", "--", "-i"]) == (
        {"bind": ["/a", "/b:/c"], "env": [], "work_dir": "/w"},
        ["-i"],
    )
    with pytest.raises(UsageError, match="--image needs a value"):
        split(["--image"])


@pytest.mark.root
def test_argv_stdin_and_exit_status_pass_through(work):
    code = (
        "import json, os, shutil, sys; print(json.dumps({'argv': sys.argv[1:], 'in': sys.stdin.read(), "
        "'image': os.environ.get('APPTAINER_NAME'), 'cwd': os.getcwd(), 'sbatch': shutil.which('sbatch'), "
        "'work': os.environ.get('DASK_SCALABLE__WORK_DIRECTORY')})); sys.exit(7)"
    )
    r = subprocess.run(
        scalable_python("-c", code, "a b", "--image"),
        input="from stdin",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 7, r.stderr
    got = json.loads(r.stdout)
    assert got["argv"] == ["a b", "--image"] and got["in"] == "from stdin"
    assert got["image"] == "scalable_container.sif" and got["cwd"] == got["work"] == str(work)
    assert got["sbatch"].startswith(os.environ["XDG_RUNTIME_DIR"])  # the relay's shim
    assert not os.listdir(os.environ["XDG_RUNTIME_DIR"])  # the relay directory is gone


def test_a_missing_image_is_one_sentence(work):
    r = subprocess.run(
        scalable_python("--image", str(work / "nope.sif"), "-c", "pass"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        (
            f"scalable python: image {work / 'nope.sif'} does not exist; copy it there (scalable bootstrap) "
            f"or give scalable python --image PATH"
        )
    ]


WAITER = """
import sys
try:
    print("ready", flush=True)
    sys.stdin.readline()
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(5)
"""


@pytest.mark.root
def test_sigint_to_the_command_reaches_python_once(work):
    (work / "waiter.py").write_text(WAITER)
    proc = subprocess.Popen(
        scalable_python("waiter.py"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    assert proc.stdout.read().strip() == "interrupted"
    assert proc.wait(60) == 5
    assert not os.listdir(os.environ["XDG_RUNTIME_DIR"])


@pytest.mark.root
def test_ctrl_c_on_a_terminal_reaches_python_once(work):
    (work / "waiter.py").write_text(WAITER)
    pid, fd = pty.fork()  # a new session whose controlling terminal is the pty, as in a login shell
    if pid == 0:
        os.execv(sys.executable, scalable_python("waiter.py"))
    out = read_until(fd, b"ready")
    os.write(fd, b"\x03")  # Ctrl-C: the terminal signals its foreground group
    while True:
        try:
            chunk = os.read(fd, 1024)
        except OSError:  # EIO: the child side closed
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 5, out
    assert out.count(b"interrupted") == 1 and b"Traceback" not in out, out


@pytest.mark.root
def test_no_arguments_is_an_interactive_session_that_survives_ctrl_c(work):
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.executable, scalable_python())
    out = read_until(fd, b">>> ")
    os.write(fd, b"import os; print(os.environ['APPTAINER_NAME'])\n")
    out = read_until(fd, b"scalable_container.sif", out)
    # Ctrl-C stops the running statement and the session goes on. (Not at an idle prompt:
    # there CPython itself may hold a SIGINT that lands before its readline waits until the
    # next line is typed.)
    os.write(fd, b"import time; print('sleep' + 'ing'); time.sleep(600)\n")
    out = read_until(fd, b"sleeping", out)
    os.write(fd, b"\x03")
    out = read_until(fd, b"KeyboardInterrupt", out)
    os.write(fd, b"print(6 * 7); raise SystemExit(9)\n")
    out = read_until(fd, b"42", out)
    try:
        while os.read(fd, 1024):
            pass
    except OSError:
        pass
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 9, out


@pytest.mark.root
def test_wrapper_runs_scalable_python(work, tmp_path):
    ns = launcher_args({"bind": [], "env": ["A=1"], "work_dir": str(work)})
    text = wrapper_text(ns, module_load="true  # module load apptainer")
    assert text.startswith("#!/bin/sh\n") and "true  # module load apptainer\n" in text
    path = write_wrapper(str(work / "python3"), text)
    r = subprocess.run(
        [path, "-c", "import os, sys; print(os.environ['A']); sys.exit(4)"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (r.returncode, r.stdout) == (4, "1\n"), r.stderr
    (tmp_path / "target").write_text("")
    os.symlink(tmp_path / "target", tmp_path / "link")
    with pytest.raises(UsageError, match="not a regular file of yours"):
        write_wrapper(str(tmp_path / "link"), text)
    assert (tmp_path / "target").read_text() == ""


WORKFLOW = """
import json, os, shutil, sys
from scalable import ScalableClient, SlurmCluster
assert not os.path.exists('/run/munge/munge.socket.2')
cluster = SlurmCluster(queue='slurm', walltime='00:10:00')   # no work_dir: scalable python set it
cluster.add_container(tag='gcam', cpus=1, memory='500M')
cluster.add_workers(n=1, tag='gcam')
client = ScalableClient(cluster)
client.wait_for_workers(1, timeout=150)
image = client.submit(lambda: os.environ.get('APPTAINER_NAME'), tag='gcam').result()
jobs = sorted({j['job_id'].split('_')[0] for j in cluster.jobs()})
client.close()
cluster.close()
print(json.dumps({'sbatch': shutil.which('sbatch'), 'image': image, 'jobs': jobs, 'work': cluster.work_dir,
                  'args': sys.argv[1:]}))
sys.exit(3)
"""


@pytest.mark.slurm
def test_a_batch_workflow_creates_a_slurm_cluster_through_the_relay(
    slurm, work, tmp_path, make_image
):
    from test_relay_slurm import hide_slurm_binds

    make_image("gcam", work / "containers")
    (work / "workflow.py").write_text(WORKFLOW)
    hide = [f"--bind={b}" for b in hide_slurm_binds(tmp_path) if b != "--bind"]
    r = subprocess.run(
        scalable_python(*hide, "workflow.py", "ssp2"),
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert r.returncode == 3, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["sbatch"].startswith(os.environ["XDG_RUNTIME_DIR"])  # the relay's shim, not Slurm's
    assert (
        got["image"] == "gcam_container.sif"
        and got["work"] == str(work)
        and got["args"] == ["ssp2"]
    )
    assert got["jobs"]
    deadline = time.monotonic() + 30
    while {j["job_id"].split("_")[0] for j in slurm.squeue()} & set(got["jobs"]):
        assert time.monotonic() < deadline, "close() did not cancel the jobs"
        time.sleep(0.3)


@pytest.mark.ssh
@needs_sshd
def test_bootstrap_installs_the_python3_wrapper_when_asked(host, laptop, tmp_path):  # noqa: F811
    # The host's Python must import this checkout of scalable, as an installed one would.
    remote_python = tmp_path / "host-python"
    remote_python.write_text(f'#!/bin/sh\nPYTHONPATH={PROJECT} exec {sys.executable} "$@"\n')
    remote_python.chmod(0o755)
    args = bootstrap_args(
        host,
        "--until",
        "kernel",
        "--remote-python",
        str(remote_python),
        "--module-load",
        f"export PATH={TESTS_BIN}:{HERE / 'fake_docker'}:$PATH",
    )
    r = run_bootstrap(laptop, args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (host.work_dir / "python3").exists()  # opt-in
    r = run_bootstrap(
        laptop, [*args, "--python3-wrapper"]
    )  # a re-run with the flag redoes the kernel step
    assert r.returncode == 0, r.stdout + r.stderr
    wrapper = host.work_dir / "python3"
    assert f"{wrapper} runs Python in the scalable image" in r.stdout
    assert json.loads(
        (Path(laptop["XDG_CONFIG_HOME"]) / "scalable" / "bootstrap.json").read_text()
    )["python3_wrapper"]
    # The wrapper loads the site's module line itself, so it works from a plain login shell.
    env = {
        **os.environ,
        "PATH": f"{os.path.dirname(sys.executable)}:/usr/bin:/bin",
        "PYTHONPATH": PROJECT,
    }
    code = (
        "import os, shutil, sys; print(os.environ['APPTAINER_NAME'], shutil.which('sbatch') is not None, "
        "os.environ['DASK_SCALABLE__WORK_DIRECTORY']); sys.exit(2)"
    )
    out = subprocess.run(
        [str(wrapper), "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (out.returncode, out.stdout.split()) == (
        2,
        ["scalable_container.sif", "True", str(host.work_dir)],
    ), out.stderr


def test_scalable_bootstrap_is_an_alias_of_scalable_bootstrap(capsys):
    import tomllib

    from scalable.cli import bootstrap_main

    with open(os.path.join(PROJECT, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert scripts["scalable_bootstrap"] == "scalable.cli:bootstrap_main"
    with pytest.raises(SystemExit) as e:
        bootstrap_main(["--help"])
    assert e.value.code == 0 and "usage: scalable bootstrap" in capsys.readouterr().out
