"""The test Slurm cluster is real: jobs run, arrays expand, scancel cancels, nodes fail and return."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slurm_harness import DaemonExited, SlurmTestCluster, processes_of
from waiting import wait_for

pytestmark = pytest.mark.slurm


def test_cluster_is_up(slurm):
    assert os.environ["SLURM_CONF"] == slurm.conf
    assert set(slurm.sinfo()) == {"cn1", "cn2", "cn3"}
    # earlier tests of the session may leave nodes completing jobs for a moment
    slurm.wait_idle(timeout=60)
    assert all(s.rstrip("~#") in ("idle", "mix", "alloc") for s in slurm.sinfo().values())
    out = slurm.run(["sinfo", "--noheader", "--format=%P %D"]).stdout.split("\n")
    assert "slurm* 3" in out and "debug 3" in out
    conf = slurm.run(["scontrol", "show", "config"]).stdout
    assert f"ClusterName             = {slurm.cluster_name}" in conf
    assert slurm.startup_seconds < 120  # a hang, not a speed check


def test_job_runs_to_completion(slurm, tmp_path):
    out = tmp_path / "out.txt"
    job = slurm.sbatch(
        "--partition=slurm",
        f"--output={out}",
        "--job-name=tiny",
        "--wrap",
        "echo ran on $SLURMD_NODENAME",
    )
    wait_for(lambda: out.exists() and "ran on cn" in out.read_text())
    wait_for(lambda: not [j for j in slurm.squeue() if j["job_id"] == job])


def test_array_gives_one_task_per_index(slurm, tmp_path):
    job = slurm.sbatch(
        "--array=0-3",
        f"--output={tmp_path}/task-%a.txt",
        "--wrap",
        "echo $SLURM_ARRAY_TASK_ID; sleep 1",
    )
    tasks = wait_for(
        lambda: (
            [j for j in slurm.squeue("--array") if j["job_id"].startswith(job + "_")]
            and [j for j in slurm.squeue("--array") if j["job_id"].startswith(job + "_")]
        )
    )
    assert len(tasks) == 4
    assert {t["job_id"] for t in tasks} == {f"{job}_{i}" for i in range(4)}
    for i in range(4):
        path = tmp_path / f"task-{i}.txt"
        wait_for(lambda path=path, i=i: path.exists() and path.read_text().strip() == str(i))


def test_scancel_ends_a_running_job(slurm):
    job = slurm.sbatch(
        "--partition=debug", "--output=/dev/null", "--job-name=sleeper", "--wrap", "sleep 300"
    )
    running = wait_for(
        lambda: [j for j in slurm.squeue() if j["job_id"] == job and j["state"] == "RUNNING"]
    )
    assert running[0]["partition"] == "debug" and running[0]["name"] == "sleeper"
    slurm.run(["scancel", job])
    wait_for(lambda: not [j for j in slurm.squeue() if j["job_id"] == job])
    # The job's processes are gone too, not only its queue entry.
    wait_for(
        lambda: (
            not [
                p
                for p in processes_of(slurm.directory)
                if b"sleep\x00300" in Path(f"/proc/{p}/cmdline").read_bytes()
            ]
        )
    )


def test_cancel_all_empties_the_queue(slurm):
    before = len(slurm.squeue("--array"))
    slurm.sbatch("--output=/dev/null", "--array=0-9", "--wrap", "sleep 300")
    slurm.sbatch("--output=/dev/null", "--partition=debug", "--wrap", "sleep 300")
    wait_for(lambda: len(slurm.squeue("--array")) >= before + 11)
    assert slurm.cancel_all(timeout=60) >= 2
    assert slurm.squeue() == []


def test_stopped_node_fails_its_jobs_and_comes_back(slurm):
    job = slurm.sbatch("--nodelist=cn2", "--output=/dev/null", "--wrap", "sleep 300")
    wait_for(lambda: [j for j in slurm.squeue() if j["job_id"] == job and j["state"] == "RUNNING"])
    slurm.stop_node("cn2")
    assert slurm.sinfo()["cn2"].startswith("down")
    wait_for(lambda: not [j for j in slurm.squeue() if j["job_id"] == job])
    slurm.start_node("cn2")
    assert slurm.sinfo()["cn2"] in ("idle", "mix")
    job = slurm.sbatch("--nodelist=cn2", "--output=/dev/null", "--wrap", "true")
    wait_for(lambda: not [j for j in slurm.squeue() if j["job_id"] == job])


def test_two_clusters_do_not_collide(slurm):
    with SlurmTestCluster(n_nodes=1, cpus=2, memory=1000) as other:
        assert other.cluster_name != slurm.cluster_name
        assert other.conf != slurm.conf and other.directory != slurm.directory
        job = other.sbatch("--output=/dev/null", "--job-name=other", "--wrap", "sleep 60")
        wait_for(lambda: [j for j in other.squeue() if j["state"] == "RUNNING"])
        assert [(j["job_id"], j["name"]) for j in other.squeue()] == [(job, "other")]
        assert "other" not in [j["name"] for j in slurm.squeue()]
        assert other.sinfo() == {"cn1": "mix"}
        directory = other.directory
    assert not os.path.exists(directory)
    assert not processes_of(directory)
    assert set(slurm.sinfo()) == {"cn1", "cn2", "cn3"}  # the session's cluster is untouched


def test_command_line_start_and_stop(tmp_path):
    harness = Path(__file__).with_name("slurm_harness.py")
    directory = tmp_path / "cli-slurm"
    out = subprocess.run(
        [sys.executable, str(harness), "start", "--dir", str(directory), "--nodes", "1"],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )
    conf = out.stdout.strip()
    try:
        assert conf == str(directory / "slurm.conf")
        sinfo = subprocess.run(
            ["sinfo", "--noheader", "--Node", "--format=%N %t"],
            env={**os.environ, "SLURM_CONF": conf},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert sinfo[:2] == ["cn1", "idle"]
    finally:
        subprocess.run(
            [sys.executable, str(harness), "stop", "--dir", str(directory)], timeout=60, check=True
        )
    assert not directory.exists()
    assert not processes_of(str(directory))


def test_a_daemon_that_cannot_start_is_reported_at_once(tmp_path):
    broken = SlurmTestCluster(
        n_nodes=1, directory=str(tmp_path / "broken"), extra_conf="SelectType=select/does_not_exist"
    )
    start = time.monotonic()
    with pytest.raises(DaemonExited, match="slurmctld exited"):
        broken.start(timeout=60)
    assert time.monotonic() - start < 90  # not the two 60 s waits for a daemon that is gone
    assert not (tmp_path / "broken").exists()
    assert not processes_of(str(tmp_path / "broken"))
