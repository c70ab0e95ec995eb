"""``scalable jobs``/``cleanup`` believe only records this user wrote, and never cancel a live
cluster's job: malformed, misnamed, linked, foreign and pid-reused records, first without any
service, then on the real test Slurm with live clusters beside them."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys

import pytest

from scalable import SlurmCluster, records
from scalable.runner import run
from waiting import wait_for


def record_dir(work):
    d = work / ".scalable" / "clusters"
    d.mkdir(parents=True, mode=0o700, exist_ok=True)
    os.chmod(d, 0o700)
    return d


def dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


def record(cluster_id, pid, **extra):
    return {
        "id": cluster_id,
        "host": socket.gethostname(),
        "pid": pid,
        "pidns": records.pid_namespace(),
        **extra,
    }


def cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "scalable.cli", *args],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


MALFORMED = {
    "junk.json": "{not json",
    "list.json": "[1, 2]",
    "badpid.json": json.dumps({"id": "badpid", "host": "h", "pid": "12"}),
    "nohost.json": json.dumps({"id": "nohost", "pid": 12}),
    "deep.json": "[" * 100_000 + "]" * 100_000,
}


def test_malformed_records_are_skipped_with_a_warning_naming_each_file(tmp_path):
    d = record_dir(tmp_path)
    for name, text in MALFORMED.items():
        (d / name).write_text(text)
    assert records.read_all(str(tmp_path)) == []
    for command in ("jobs", "cleanup"):
        out = cli(command, "--work-dir", str(tmp_path), cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert "Traceback" not in out.stderr
        for name in MALFORMED:
            assert name in out.stderr
    assert sorted(p.name for p in d.iterdir()) == sorted(MALFORMED)  # warned about, not deleted


def test_a_record_is_believed_only_under_its_own_name_as_a_regular_file(tmp_path):
    d = record_dir(tmp_path)
    (d / "stale.json").write_text(json.dumps(record("c0ffee0001", dead_pid())))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "linked.json").write_text(json.dumps(record("linked", dead_pid())))
    (d / "linked.json").symlink_to(elsewhere / "linked.json")
    (d / "good.json").write_text(json.dumps(record("good", dead_pid())))
    assert [r["id"] for r in records.read_all(str(tmp_path))] == ["good"]


def test_a_reused_pid_does_not_keep_a_dead_cluster_alive(tmp_path):
    me, start = os.getpid(), records.process_start(os.getpid())
    assert start is not None
    assert records.is_alive(record("a", me, pid_start=start)) is True
    # the same pid, but a process that started later than the cluster's did
    assert records.is_alive(record("a", me, pid_start=start - 1)) is False
    assert records.is_alive(record("a", dead_pid(), pid_start=start)) is False
    assert records.is_alive({**record("a", me, pid_start=start), "host": "elsewhere"}) is None


def test_records_are_written_0600_through_no_link(tmp_path):
    d = record_dir(tmp_path)
    victim = tmp_path / "victim"
    victim.write_text("keep")
    # links planted where a record and a predictable temporary file would go
    (d / "c1.json").symlink_to(victim)
    (d / f"c1.json.{os.getpid()}.tmp").symlink_to(victim)
    path = records.write(str(tmp_path), "c1")
    assert victim.read_text() == "keep"
    assert not os.path.islink(path) and oct(os.stat(path).st_mode & 0o777) == "0o600"
    assert records.read_all(str(tmp_path))[0]["pid_start"] == records.process_start(os.getpid())


def test_the_scalable_folder_made_for_records_is_private_whatever_the_umask(tmp_path):
    # under umask 002 (common in project groups) <work_dir>/.scalable would be group-writable:
    # anyone in the group could move the records folder (and the cache, the TLS files) aside
    old = os.umask(0o002)
    try:
        records.write(str(tmp_path), "c1")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / ".scalable").st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / ".scalable" / "clusters").st_mode) == 0o700


@pytest.mark.root
def test_a_record_of_another_user_is_never_read(other_user):
    work = other_user.base / "work"
    work.mkdir()
    d = record_dir(work)
    os.chmod(d, 0o1777)  # shared for a while
    try:
        other_user.sh(f"printf '%s' '{json.dumps(record('theirs', dead_pid()))}' > {d}/theirs.json")
    finally:
        os.chmod(d, 0o700)
    assert os.stat(d / "theirs.json").st_uid == other_user.uid
    assert records.read_all(str(work)) == []
    os.chmod(d, 0o770)  # a record directory others can write: nothing in it is believed
    (d / "mine.json").write_text(json.dumps(record("mine", dead_pid())))
    assert records.read_all(str(work)) == []


# -- on the real test Slurm, with live clusters beside the records -------------------------------


def started(pid) -> int:
    """Process ``pid``'s start time (clock ticks since boot), read here, not through scalable."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return int(stat[stat.rindex(b")") + 2 :].split()[19])


def live_jobs(cluster_id):
    out = run(["squeue", "--noheader", "--array", "--format=%i|%j|%T"]).stdout
    return [
        line.split("|")[0]
        for line in out.splitlines()
        if f"sc-{cluster_id}-" in line and "COMPLETING" not in line
    ]


@pytest.mark.slurm
def test_cleanup_never_cancels_a_job_of_a_live_cluster(
    tmp_path, slurm, make_image, apptainer, monkeypatch
):
    here, there = tmp_path / "here", tmp_path / "there"
    for work in (here, there):
        make_image("gcam", work / "containers")
    monkeypatch.chdir(here)
    pending = {"job_extra_directives": ["--begin=now+3600"]}  # jobs that wait, never start
    with (
        SlurmCluster(queue="slurm", interface="lo", work_dir=str(here), **pending) as live,
        SlurmCluster(queue="slurm", interface="lo", work_dir=str(there), **pending) as other,
    ):
        for cluster in (live, other):
            cluster.add_container(tag="gcam", cpus=1, memory="512M")
            cluster.add_workers(tag="gcam", n=1)
        mine = wait_for(lambda: live_jobs(live.cluster_id), 120, "the live cluster's job")
        theirs = wait_for(lambda: live_jobs(other.cluster_id), 120, "the other cluster's job")
        d = record_dir(here)
        genuine = d / f"{live.cluster_id}.json"
        assert genuine.exists()
        # a stale file whose JSON names the live cluster, with a dead pid
        (d / "stale.json").write_text(json.dumps(record(live.cluster_id, dead_pid())))
        # a dead record naming a cluster that lives in another work directory
        (d / f"{other.cluster_id}.json").write_text(
            json.dumps(record(other.cluster_id, dead_pid()))
        )
        # a dead cluster of this work directory whose pid now belongs to a later process
        reused = record("deadc0ffee", os.getpid(), pid_start=started(os.getpid()) - 1)
        (d / "deadc0ffee.json").write_text(json.dumps(reused))
        dead_job = run(
            [
                "sbatch",
                "--parsable",
                "-J",
                "sc-deadc0ffee-gcam",
                "--begin=now+3600",
                "--wrap",
                "true",
            ],
            cwd=str(here),
        ).stdout.strip()

        out = cli("cleanup", cwd=here)
        assert live_jobs(live.cluster_id) == mine and live_jobs(other.cluster_id) == theirs
        assert genuine.exists()
        assert out.returncode == 0, out.stderr
        assert "stale.json" in out.stderr
        assert "cancelled 1 job(s)" in out.stdout and dead_job in out.stdout
        wait_for(
            lambda: not live_jobs("deadc0ffee"), 60, "cleanup to cancel the dead cluster's job"
        )

        # malformed records beside them: warned about by name, nothing else changes
        for name, text in MALFORMED.items():
            (d / name).write_text(text)
        out = cli("cleanup", cwd=here)
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        assert all(name in out.stderr for name in MALFORMED)
        assert live_jobs(live.cluster_id) == mine and live_jobs(other.cluster_id) == theirs
        assert genuine.exists()
        listing = cli("jobs", cwd=here)
        assert listing.returncode == 0 and live.cluster_id in listing.stdout
        assert other.cluster_id not in listing.stdout  # its jobs are not this directory's
