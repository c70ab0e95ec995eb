"""``scalable bootstrap`` without a host: settings, the Docker build and SIF conversion steps.

No Docker engine runs on these machines and no base image can be pulled, so the docker and
apptainer programs here are the recording stand-ins of ``tests/fake_docker`` (first on PATH):
they log every argv and write the files the real tools would. The end-to-end run over a real
sshd is in ``test_bootstrap_ssh.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scalable.bootstrap import images
from scalable.bootstrap.cli import gather
from scalable.bootstrap.settings import Settings, State, config_dir, load_settings, save_settings
from scalable.bootstrap.steps import Bootstrap, BootstrapError

HERE = Path(__file__).parent
FAKE = HERE / "fake_docker"
DOCKERFILE_TEXT = """\
FROM python:3.11.10-slim AS base
FROM base AS scalable
RUN pip install ipykernel==7.4.0
FROM debian:12.8-slim AS apptainer
FROM scalable AS gcam
FROM scalable AS hector
"""


@pytest.fixture
def laptop(tmp_path, monkeypatch):
    """A user's machine: its own config/cache dirs, the fake docker/apptainer first on PATH."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", f"{FAKE}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(tmp_path / "docker.log"))
    monkeypatch.setenv("FAKE_DOCKER_STATE", str(tmp_path / "docker.json"))
    (tmp_path / "Dockerfile").write_text(DOCKERFILE_TEXT)
    return tmp_path


def calls(laptop):
    path = laptop / "docker.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def make(laptop, **kw):
    settings = Settings(host="hpc", work_dir="/w", dockerfile=str(laptop / "Dockerfile"), **kw)
    lines = []
    return Bootstrap(settings, State(), lines.append), lines


def test_settings_live_in_the_user_config_dir(laptop):
    assert config_dir() == laptop / "config" / "scalable"
    s = Settings(host="hpc", user="me", work_dir="/scratch/me/w", targets=["gcam"])
    path = save_settings(s)
    assert path == laptop / "config" / "scalable" / "bootstrap.json"
    assert load_settings() == s
    path.write_text("{not json")
    assert load_settings() == Settings(), "a damaged file starts over instead of failing"


def test_without_a_terminal_a_missing_setting_names_its_flag(laptop):
    args = subprocess.run(  # the real command, no stdin: CI's situation
        [sys.executable, "-m", "scalable.cli", "bootstrap", "--work-dir", "/w"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=os.environ,
        timeout=60,
    )
    assert args.returncode == 1
    assert "give --host" in args.stderr
    assert not (laptop / "config" / "scalable" / "bootstrap.json").exists()


def test_flags_override_and_are_remembered(laptop):
    import argparse

    ns = argparse.Namespace(host="a", work_dir="/w", targets=["gcam"], user=None)
    s = gather(ns, interactive=False)
    save_settings(s)
    ns2 = argparse.Namespace(host="b")
    s2 = gather(ns2, interactive=False)
    assert (s2.host, s2.work_dir, s2.targets) == ("b", "/w", ["gcam"])


def test_build_and_convert_then_skip_unchanged_then_rebuild_changed(laptop):
    boot, lines = make(laptop, targets=["gcam"])
    boot.step_build()
    boot.step_convert()
    built = [c[c.index("--target") + 1] for c in calls(laptop) if c[:2] == ["docker", "build"]]
    assert built == ["scalable", "gcam", "apptainer"]
    runs = [c for c in calls(laptop) if c[:2] == ["docker", "run"]]
    assert [r[-2] for r in runs] == ["/out/scalable_container.sif", "/out/gcam_container.sif"]
    assert runs[0][-1] == "docker-daemon://scalable-scalable:bootstrap"
    sif_dir = laptop / "cache" / "scalable" / "containers"
    assert sorted(p.name for p in sif_dir.iterdir()) == [
        "gcam_container.sif",
        "scalable_container.sif",
    ]

    # Same Dockerfile: nothing is built or converted again.
    n = len(calls(laptop))
    boot2, lines2 = make(laptop, targets=["gcam"])
    boot2.step_build()
    boot2.step_convert()
    assert [c for c in calls(laptop)[n:] if c[1] in ("build", "run")] == []
    assert "  gcam_container.sif: unchanged" in lines2

    # A changed Dockerfile: rebuilt, and the images whose id changed are converted again.
    (laptop / "Dockerfile").write_text(DOCKERFILE_TEXT + "# a change\n")
    boot3, _ = make(laptop, targets=["gcam"])
    boot3.step_build()
    boot3.step_convert()
    assert len([c for c in calls(laptop)[n:] if c[:2] == ["docker", "run"]]) == 2


def test_local_apptainer_converter(laptop):
    boot, _ = make(laptop, targets=["hector"], converter="apptainer")
    boot.step_build()
    boot.step_convert()
    built = [c[c.index("--target") + 1] for c in calls(laptop) if c[:2] == ["docker", "build"]]
    assert built == ["scalable", "hector"], "no converter image needed with a local apptainer"
    conv = [c for c in calls(laptop) if c[0] == "apptainer"]
    out = laptop / "cache" / "scalable" / "containers" / "hector_container.sif"
    assert conv[-1] == [
        "apptainer",
        "build",
        "--force",
        str(out),
        "docker-daemon://scalable-hector:bootstrap",
    ]
    assert out.read_text().startswith("fake SIF of scalable-hector:bootstrap")


def test_unknown_target_lists_the_dockerfile_targets(laptop):
    boot, _ = make(laptop, targets=["gcamm"])
    with pytest.raises(
        BootstrapError, match=r"gcamm not in .*its targets are: base, scalable, apptainer, gcam"
    ):
        boot.step_build()
    assert calls(laptop) == []


def test_docker_missing_or_engine_down_says_what_to_do(laptop):
    with pytest.raises(Exception, match="install Docker"):
        images.check_docker(str(laptop / "no-such-docker"))
    real = shutil.which("docker", path="/usr/local/bin:/usr/bin")
    if real:  # the real client is installed here, and no engine runs
        with pytest.raises(Exception, match="engine does not answer: start Docker"):
            images.check_docker(real)


def test_list_targets_command(laptop):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "scalable.cli",
            "bootstrap",
            "--list-targets",
            "--dockerfile",
            str(laptop / "Dockerfile"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["base", "scalable", "apptainer", "gcam", "hector"]


def test_redo_of_an_unknown_step_lists_the_steps(laptop):
    r = subprocess.run(
        [sys.executable, "-m", "scalable.cli", "bootstrap", "--redo", "copyy"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert r.returncode == 1
    assert "--redo copyy: no such step; the steps are check, build, convert" in r.stderr


def test_unreachable_host_says_what_to_check(laptop):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = laptop / "ssh_config"
    cfg.write_text(f"Host down\n  HostName 127.0.0.1\n  Port {port}\n")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "scalable.cli",
            "bootstrap",
            "--host",
            "down",
            "--ssh-config",
            str(cfg),
            "--work-dir",
            "/w",
            "--until",
            "check",
        ],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert r.returncode == 1
    assert "could not log in to 'down'" in r.stderr and "Connection refused" in r.stderr, r.stderr
    assert "Check that `ssh down` works from this machine" in r.stderr
