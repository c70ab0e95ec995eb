"""``scalable bootstrap`` resuming, asking, and adapting to the machine, against a real sshd.

See ``bootstrap_harness.py`` for the fake HPC login host and the recording docker stand-in.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bootstrap_harness import (  # noqa: F401
    HERE,
    REPO,
    Running,
    bootstrap_args,
    get_json,
    host,
    laptop,
    needs_sshd,
    run_bootstrap,
)

pytestmark = [pytest.mark.ssh, needs_sshd]


def test_stopping_after_each_step_resumes_without_redoing(host, laptop):
    from scalable.bootstrap.steps import STEPS

    logins = 0
    for i, step in enumerate(STEPS[:-1]):
        r = run_bootstrap(laptop, bootstrap_args(host, "--until", step))
        out = r.stdout
        assert r.returncode == 0, out + r.stderr
        for earlier in STEPS[:i]:
            assert f"{earlier}: done already" in out or earlier == "jupyter", out
        assert f"] {step}\n" in out + "\n" or f"] {step}:" not in out, out
        logins_now = host.logins()
        assert logins_now - logins <= 1, f"{step}: more than one login in a run"
        logins = logins_now
    calls = [json.loads(line) for line in open(laptop["FAKE_DOCKER_LOG"])]
    builds = [c[c.index("--target") + 1] for c in calls if c[1] == "build"]
    assert builds == ["scalable", "stitches", "apptainer"], "each image built once in all the runs"
    assert len([c for c in calls if c[1] == "run"]) == 2, "each image converted once"
    # build and convert ran without logging in; every other run logged in once.
    assert host.logins() == len(STEPS[:-1]) - 2

    # The last run finishes: only the forward (and the JupyterLab check) is left.
    final = Running(laptop, bootstrap_args(host))
    try:
        assert final.text.count("done already") == 7, final.text
        get_json(final.url.replace("/lab?", "/api/status?"))
    finally:
        final.stop()


def test_interrupted_build_resumes_with_the_next_image(host, laptop):
    env = dict(laptop, FAKE_DOCKER_DELAY="1.5")
    proc = subprocess.Popen(
        bootstrap_args(host, "--until", "convert"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if "#1 [stitches] building" in line:
            proc.send_signal(signal.SIGINT)  # Ctrl-C while docker builds the second image
            break
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, "".join(seen) + rest
    assert "run `scalable bootstrap` again to resume" in rest
    r = run_bootstrap(laptop, bootstrap_args(host, "--until", "convert"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "check: done already" in r.stdout and "scalable: built already" in r.stdout
    calls = [json.loads(line) for line in open(laptop["FAKE_DOCKER_LOG"])]
    builds = [c[c.index("--target") + 1] for c in calls if c[1] == "build"]
    # stitches was interrupted and built again; scalable was not.
    assert builds == ["scalable", "stitches", "stitches", "apptainer"]


def test_first_run_asks_once_in_a_terminal_then_remembers(host, laptop):
    import pty
    import select

    master, slave = pty.openpty()
    args = [
        sys.executable,
        "-m",
        "scalable.cli",
        "bootstrap",
        "--ssh-config",
        str(host.ssh_config),
        "--dockerfile",
        str(REPO / "Dockerfile"),
        "--remote-python",
        sys.executable,
        "--module-load",
        f"PATH={HERE / 'fake_docker'}:$PATH",
        "--until",
        "layout",
    ]
    proc = subprocess.Popen(
        args, env=laptop, stdin=slave, stdout=slave, stderr=slave, close_fds=True
    )
    os.close(slave)
    answers = {
        "HPC login host": "hpc-test",
        "User name": "",
        "Work directory": str(host.work_dir),
        "identity file": "",
        "Container targets": "hector",
    }
    screen = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            screen += chunk
            for prompt, answer in list(answers.items()):
                if prompt.encode() in screen.split(b"\n")[-1]:
                    os.write(master, answer.encode() + b"\r")
                    del answers[prompt]
        elif proc.poll() is not None:
            break
    proc.wait(30)
    os.close(master)
    text = screen.decode(errors="replace")
    assert proc.returncode == 0, text
    assert answers == {}, f"not asked: {list(answers)}\n{text}"
    # The targets prompt offers the Dockerfile's model targets.
    assert "gcam, stitches" in text and "[4/9] layout" in text
    # The host check ran the module line there, which found the (stand-in) apptainer.
    assert f"apptainer on host: {HERE / 'fake_docker' / 'apptainer'}" in text

    # Asked once: the next run, without a terminal and without flags, knows everything.
    r = run_bootstrap(
        laptop, [sys.executable, "-m", "scalable.cli", "bootstrap", "--until", "layout"]
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("done already") == 4
    saved = json.loads(Path(laptop["XDG_CONFIG_HOME"], "scalable", "bootstrap.json").read_text())
    assert (saved["host"], saved["targets"], saved["work_dir"]) == (
        "hpc-test",
        ["hector"],
        str(host.work_dir),
    )


def test_without_rsync_images_are_copied_with_scp(host, laptop, tmp_path):
    # A PATH with ssh and scp but no rsync, as on Windows' Git Bash.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ssh", "scp"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    os.symlink(sys.executable, bin_dir / "python3")  # the docker stand-in's interpreter
    env = dict(laptop, PATH=f"{HERE / 'fake_docker'}{os.pathsep}{bin_dir}")
    r = run_bootstrap(env, bootstrap_args(host, "--until", "copy", "--user", "root"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "copying with scp" in r.stdout and "copied with scp" in r.stdout
    sent = host.work_dir / "containers" / "stitches_container.sif"
    assert sent.read_text().startswith("fake SIF of scalable-stitches:bootstrap")
    assert host.logins() == 1


def test_default_host_env_is_a_venv_with_the_local_scalable_wheel(host, laptop):
    args = bootstrap_args(host)
    i = args.index("--remote-python")
    del args[i : i + 2]
    # The venv sees the base interpreter's packages, so pip finds the dependencies satisfied and
    # the test needs no downloads of them; the venv, the wheel of this checkout (built here,
    # copied there), pip and the probe all run for real.
    args += ["--remote-base-python", sys.executable, "--system-site-packages"]
    run = Running(laptop, args)
    try:
        venv = host.work_dir / ".venv"
        venv_python = str(venv / "bin" / "python")
        assert (
            f"creating {venv}" in run.text
            and f"building the scalable wheel from {REPO}" in run.text
        )
        assert "installing scalable-" in run.text and f"host python: {venv_python}" in run.text
        assert list((host.work_dir / ".scalable" / "wheels").glob("scalable-*.whl"))
        # The host runs the shipped scalable, not the one of the base interpreter.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # as the host runs it
        where = subprocess.run(
            [venv_python, "-c", "import scalable; print(scalable.__file__)"],
            capture_output=True,
            text=True,
            check=True,
            cwd=host.work_dir,
            env=env,
        ).stdout
        assert where.startswith(str(venv)), where
        pid = json.loads((host.work_dir / ".scalable" / "jupyter.json").read_text())["pid"]
        assert Path(f"/proc/{pid}/cmdline").read_text().split("\0")[0] == venv_python
        base, token = run.url.split("/lab?token=")
        spec = get_json(f"{base}/api/kernelspecs?token={token}")["kernelspecs"]["scalable"]["spec"]
        assert spec["argv"][0] == venv_python
        print(next(line for line in run.lines if line.startswith("ready in")))
    finally:
        run.stop()
