"""Inputs that must arrive whole, and signals that must not strand jobs, on the real test Slurm."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from scalable import ScalableClient, SlurmCluster, records
from waiting import wait_for

pytestmark = pytest.mark.slurm

#: spaces, both quotes, a comment sign, shell operators and a Slurm pattern
WEIRD = 'my "runs" it\'s #1 ;& (x) %j'


def live_jobs(slurm, cluster_id):
    return [
        j
        for j in slurm.squeue("--array")
        if j["name"].startswith(f"sc-{cluster_id}-")
        and j["state"] not in ("COMPLETING", "COMPLETED", "CANCELLED")
    ]


def test_a_work_dir_with_spaces_and_quotes_works_end_to_end(tmp_path, make_image, apptainer, slurm):
    work = tmp_path / WEIRD
    make_image("gcam", work / "containers")
    (work / "in data").mkdir(parents=True)
    (work / "in data" / "f.txt").write_text("bound whole")

    def look():
        with open("/in/f.txt") as f:
            data = f.read()
        return (
            os.environ.get("LIST"),
            os.environ.get("PAIRS"),
            os.environ.get("B"),
            data,
            os.environ.get("APPTAINER_NAME"),
            os.getcwd(),
        )

    cluster = SlurmCluster(queue="slurm", walltime="00:10:00", interface="lo", work_dir=str(work))
    try:
        cluster.add_container(
            tag="gcam",
            cpus=1,
            memory="300M",
            dirs={"in data": "/in"},
            env={"LIST": "a,b,c", "PAIRS": "x=1,B=injected"},
        )
        cluster.add_workers(tag="gcam", n=1)
        with ScalableClient(cluster) as client:
            got = client.submit(look, tag="gcam", pure=False).result(timeout=180)
        # a value with commas arrives whole, and injects no variable of its own
        assert got == (
            "a,b,c",
            "x=1,B=injected",
            None,
            "bound whole",
            "gcam_container.sif",
            str(work),
        )
        logs = list((work / "logs").iterdir())
        assert logs and all(p.name.startswith(f"sc-{cluster.cluster_id}-gcam-") for p in logs)
    finally:
        cluster.close()
    wait_for(lambda: not live_jobs(slurm, cluster.cluster_id), 60, "the cluster's jobs to end")


HOLDER = """
import sys, time
from scalable import SlurmCluster
# the jobs wait for an hour: running workers would end by themselves once the scheduler is
# gone, queued jobs would not
cluster = SlurmCluster(queue="slurm", walltime="00:10:00", interface="lo", work_dir=sys.argv[1],
                       job_extra_directives=["--begin=now+3600"])
cluster.add_container(tag="gcam", cpus=1, memory="256M")
cluster.add_workers(tag="gcam", n=2)
print(cluster.cluster_id, flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_signal_to_the_process_holding_a_cluster_cancels_its_jobs(
    tmp_path, make_image, apptainer, slurm, signum
):
    make_image("gcam", tmp_path / "containers")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    cluster_id = None
    try:
        cluster_id = proc.stdout.readline().strip()
        assert cluster_id, proc.communicate(timeout=60)[1]
        wait_for(lambda: len(live_jobs(slurm, cluster_id)) == 2, 60, "two submitted jobs")
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=180)
        # closed first, then ended by the default handler, as without scalable
        assert proc.returncode == -signum, err
        wait_for(lambda: not live_jobs(slurm, cluster_id), 60, "no job of the cluster left")
        assert not os.path.exists(
            os.path.join(records.record_dir(str(tmp_path)), f"{cluster_id}.json")
        )
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if cluster_id:
            subprocess.run(["scancel", f"--name=sc-{cluster_id}-gcam"], check=False)
