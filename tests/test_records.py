"""Cluster records and the rules that decide which clusters are dead (fast layer, no Slurm).

``scalable cleanup`` cancels the jobs of dead clusters only; these are the rules that say which
ones are dead. The commands themselves run on the real test Slurm in test_faults.py.
"""

import os
import socket
import subprocess
import sys

from scalable import records


def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # reaped: no process has it (pids are not reused this quickly)


def test_write_read_remove(tmp_path):
    path = records.write(str(tmp_path), "abc123", scheduler="tcp://127.0.0.1:1")
    assert os.stat(os.path.dirname(path)).st_mode & 0o777 == 0o700
    (record,) = records.read_all(str(tmp_path))
    assert record["id"] == "abc123" and record["pid"] == os.getpid()
    assert record["scheduler"] == "tcp://127.0.0.1:1"
    assert os.listdir(os.path.dirname(path)) == ["abc123.json"]  # no temp file left
    records.remove(str(tmp_path), "abc123")
    records.remove(str(tmp_path), "abc123")  # twice is fine
    assert records.read_all(str(tmp_path)) == []


def test_broken_or_foreign_files_are_skipped(tmp_path):
    records.write(str(tmp_path), "good")
    folder = tmp_path / records.RECORD_DIR
    (folder / "broken.json").write_text("{not json")
    (folder / "notes.txt").write_text("ignored")
    assert [r["id"] for r in records.read_all(str(tmp_path))] == ["good"]
    assert records.read_all(str(tmp_path / "nowhere")) == []


def test_which_clusters_are_dead():
    here = {"host": socket.gethostname(), "pidns": records.pid_namespace()}
    assert records.is_alive({**here, "pid": os.getpid()}) is True
    assert records.is_alive({**here, "pid": dead_pid()}) is False
    # another machine, or another container's pids: unknown, so never cleaned up from here
    assert records.is_alive({**here, "host": "elsewhere", "pid": dead_pid()}) is None
    assert records.is_alive({**here, "pidns": "pid:[1]", "pid": dead_pid()}) is None


def test_job_names_carry_the_cluster_id():
    assert records.job_prefix("3f2a") == "sc-3f2a-"
    rows = records.parse_squeue(
        "12_0|sc-3f2a-gcam|RUNNING\nnot|enough\n13|x|PENDING|extra\n", ("job_id", "name", "state")
    )
    assert rows == [{"job_id": "12_0", "name": "sc-3f2a-gcam", "state": "RUNNING"}]
