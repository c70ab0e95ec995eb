"""The relay against the real test Slurm, from inside the apptainer stand-in with Slurm hidden."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from scalable.relay.shim import write_shims

pytestmark = pytest.mark.slurm

TESTS_BIN = Path(__file__).parent / "bin"
SLURM_PROGRAMS = (
    "sbatch",
    "squeue",
    "scancel",
    "sinfo",
    "scontrol",
    "sacct",
    "srun",
    "salloc",
    "sacctmgr",
    "sattach",
    "sbcast",
    "sstat",
    "sprio",
    "sshare",
    "sdiag",
    "sreport",
)


def hide_slurm_binds(scratch) -> list[str]:
    """Stand-in arguments that hide Slurm's programs and munge's socket from the container
    (an empty directory made in ``scratch`` covers /run/munge)."""
    args = []
    for name in SLURM_PROGRAMS:
        for d in ("/usr/bin", "/usr/sbin", "/usr/local/bin"):
            if os.path.exists(f"{d}/{name}"):
                args += ["--bind", f"/dev/null:{d}/{name}"]
    empty = Path(scratch) / "no-munge"
    empty.mkdir(exist_ok=True)
    return args + ["--bind", f"{empty}:/run/munge"]


@pytest.fixture
def host_relay(slurm):
    """A relay (default allowlist) whose commands see the test Slurm and the stand-in runtime."""
    top = tempfile.mkdtemp(prefix="scalable-relay-t-")
    sock = os.path.join(top, "relay", "relay.sock")
    env = {**os.environ, "PATH": f"{TESTS_BIN}:{os.environ['PATH']}", "SLURM_CONF": slurm.conf}
    proc = subprocess.Popen(
        [sys.executable, "-m", "scalable.cli", "relay", "--socket", sock],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().startswith("scalable relay serving")
    yield sock
    proc.terminate()
    assert proc.wait(10) == 0
    assert not os.path.exists(sock)
    shutil.rmtree(top, ignore_errors=True)


def in_container(argv, *, work, relay_sock, image, extra=(), timeout=300):
    relay_dir = os.path.dirname(relay_sock)
    cmd = [
        "apptainer",
        "exec",
        *hide_slurm_binds(relay_dir),
        "--bind",
        f"{work}:{work}",
        "--bind",
        f"{relay_dir}:{relay_dir}",
        "--env",
        f"SCALABLE_RELAY={relay_sock}",
        "--pwd",
        str(work),
        *extra,
        image,
        *argv,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def test_shims_run_slurm_from_inside_the_container(
    slurm, host_relay, apptainer, make_image, tmp_path
):
    work = tmp_path
    image = make_image("scalable", work / "containers")
    shims = work / "shims"
    write_shims(str(shims), python=sys.executable)
    script = "import shutil, subprocess; print(shutil.which('sbatch'))"
    r = in_container([sys.executable, "-c", script], work=work, relay_sock=host_relay, image=image)
    assert r.stdout.strip() == "None", "the container must not see Slurm's own sbatch"
    job = (
        "#!/bin/bash\n#SBATCH -J relayed\n#SBATCH -o relayed-%j.out\necho ran on $SLURMD_NODENAME\n"
    )
    (work / "job.sh").write_text(job)
    path = f"PATH={shims}:{os.environ['PATH']}"
    r = in_container(
        ["env", path, "sbatch", "--parsable", "job.sh"],
        work=work,
        relay_sock=host_relay,
        image=image,
    )
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip()
    assert job_id.isdigit()
    out = work / f"relayed-{job_id}.out"  # ran in the caller's directory
    deadline = time.monotonic() + 60
    while not (out.exists() and "ran on cn" in out.read_text()):
        assert time.monotonic() < deadline, "the relayed job never ran"
        time.sleep(0.3)
    r = in_container(
        ["env", path, "scontrol", "show", "job", "999999"],
        work=work,
        relay_sock=host_relay,
        image=image,
    )
    assert r.returncode == 1 and "Invalid job id" in r.stderr  # exit code and stderr travel back
    r = in_container(
        ["env", path, "sinfo", "-h", "-o", "%P|%D"], work=work, relay_sock=host_relay, image=image
    )
    assert "slurm*|3" in r.stdout.split()


PRIVATE_TMP_JOB = """
import os
from scalable.runner import run
with open("/tmp/private-job.sh", "w") as f:   # the container's own /tmp: the host cannot see it
    f.write("#!/bin/bash\\n#SBATCH -J private\\n#SBATCH -o private-%j.out\\necho from private tmp\\n")
print(run(["sbatch", "--parsable", "/tmp/private-job.sh"]).stdout.strip())
"""


def test_job_script_in_the_containers_private_tmp(
    slurm, host_relay, apptainer, make_image, tmp_path
):
    work = tmp_path
    assert not os.path.exists("/tmp/private-job.sh")
    r = in_container(
        [sys.executable, "-c", PRIVATE_TMP_JOB],
        work=work,
        relay_sock=host_relay,
        image=make_image("scalable", work / "containers"),
    )
    assert r.returncode == 0, r.stderr
    job_id = r.stdout.strip().split(";")[0]
    out = work / f"private-{job_id}.out"
    deadline = time.monotonic() + 60
    while not (out.exists() and "from private tmp" in out.read_text()):
        assert time.monotonic() < deadline, "the job whose script only the container saw never ran"
        time.sleep(0.3)
    assert not os.path.exists("/tmp/private-job.sh")


SLURM_WORKFLOW = """
import json, os, shutil, sys, time
from scalable import ScalableClient, SlurmCluster

def where(x):
    return {"image": os.environ.get("APPTAINER_NAME"), "node": os.environ.get("SLURMD_NODENAME"),
            "x": x * x}

assert shutil.which("sbatch") is None and shutil.which("squeue") is None
assert not os.path.exists("/run/munge/munge.socket.2")
with SlurmCluster(queue="slurm", walltime="00:10:00", work_dir=os.getcwd(),
                  silence_logs=False) as cluster:
    cluster.add_container(tag="gcam", cpus=1, memory="500M")
    cluster.add_workers(n=2, tag="gcam")
    client = ScalableClient(cluster)
    client.wait_for_workers(2, timeout=150)
    results = client.gather(client.map(where, range(4), tag="gcam", pure=False))
    jobs = cluster.jobs()
    client.close()
print("RESULT " + json.dumps({"results": results, "jobs": jobs}))
"""


def test_slurm_cluster_inside_the_container_through_the_relay(
    slurm, host_relay, apptainer, make_image, tmp_path
):
    work = tmp_path
    image = make_image("gcam", work / "containers")
    (work / "workflow.py").write_text(textwrap.dedent(SLURM_WORKFLOW))
    r = in_container(
        [sys.executable, "workflow.py"],
        work=work,
        relay_sock=host_relay,
        image=make_image("scalable", work / "containers"),
    )
    lines = [line for line in r.stdout.splitlines() if line.startswith("RESULT ")]
    assert r.returncode == 0 and lines, r.stdout[-3000:] + r.stderr[-5000:]
    got = json.loads(lines[0][7:])
    assert sorted(x["x"] for x in got["results"]) == [0, 1, 4, 9]
    assert {x["image"] for x in got["results"]} == {os.path.basename(image)}
    assert all(x["node"].startswith("cn") for x in got["results"])
    job_ids = {j["job_id"].split("_")[0] for j in got["jobs"]}
    assert job_ids
    log = Path(host_relay).with_name("relay.log").read_text()
    assert "argv=sbatch" in log and "argv=scancel" in log
    deadline = time.monotonic() + 30  # close() cancelled the jobs
    while {j["job_id"].split("_")[0] for j in slurm.squeue()} & job_ids:
        assert time.monotonic() < deadline, f"jobs {job_ids} outlived close()"
        time.sleep(0.3)
