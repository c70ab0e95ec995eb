"""Job-script text of ``SlurmCluster``, rendered without Slurm (no daemon, no ``sbatch``).

A cluster calls Slurm only when workers are submitted, so the script a worker would be submitted
with is checked here in the fast layer; the scripts' effect on a real Slurm is in
``test_slurm_cluster.py`` and ``test_arrays.py``. The array name assignment runs in a real bash.
"""

import re
import shlex
import subprocess

import pytest

from scalable import SlurmCluster
from scalable.slurm_jobs import TaggedSlurmJob


@pytest.fixture
def work(tmp_path, make_image, apptainer, monkeypatch):
    for tag in ("gcam", "stitches"):
        make_image(tag, tmp_path / "containers")
    (tmp_path / "gcam_data").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def make_cluster():
    made = []

    def make(**kw):
        kw.setdefault("interface", "lo")
        cluster = SlurmCluster(**kw)
        made.append(cluster)
        return cluster

    yield make
    for cluster in made:
        cluster.close()


def directives(script):
    return [line for line in script.splitlines() if line.startswith("#SBATCH")]


def test_each_tag_has_its_own_header(work, make_cluster):
    cluster = make_cluster(queue="slurm", walltime="00:20:00")
    cluster.add_container(tag="gcam", cpus=10, memory="20G")
    cluster.add_container(tag="stitches", cpus=6, memory="50G")
    gcam, stitches = cluster.job_script("gcam"), cluster.job_script("stitches")
    assert directives(gcam) == [
        f"#SBATCH -J sc-{cluster.cluster_id}-gcam",
        "#SBATCH -p slurm",
        "#SBATCH -n 1",
        "#SBATCH --cpus-per-task=10",
        "#SBATCH --mem=20G",
        "#SBATCH -t 00:20:00",
        f"#SBATCH -o {work}/logs/%x-%A_%a.log",
    ]
    assert f"#SBATCH -J sc-{cluster.cluster_id}-stitches" in directives(stitches)
    assert "#SBATCH --cpus-per-task=6" in directives(stitches)
    assert "#SBATCH --mem=50G" in directives(stitches)
    assert f"{work}/containers/stitches_container.sif" in stitches.splitlines()[-1]
    assert "--resources stitches=1" in stitches and "--nthreads 6" in stitches
    assert "gcam" not in stitches.replace(str(work), "")
    assert not (work / "logs").exists()  # made when the first job is submitted


@pytest.mark.parametrize("array", [True, False])
def test_array_or_one_job_per_worker(work, make_cluster, array):
    cluster = make_cluster(job_arrays=array)
    cluster.add_container(tag="gcam", cpus=1, memory="256M")
    script = cluster.job_script("gcam")
    assert ("SLURM_ARRAY_TASK_ID" in script) is array
    assert f"#SBATCH -o {work}/logs/{'%x-%A_%a.log' if array else '%x-%j.log'}" in script


def test_each_array_task_picks_its_worker_name_in_bash(work, make_cluster):
    cluster = make_cluster()
    cluster.add_container(tag="gcam", cpus=1, memory="256M")
    job = TaggedSlurmJob(cluster.scheduler_address, name="gcam-0", **cluster._job_options("gcam"))
    script = job.job_script(["gcam-0", "gcam-1", "odd name;$(x)"])
    assignments = [line for line in script.splitlines() if line.startswith("SCALABLE_")]
    for task, expected in [(None, "gcam-0"), ("1", "gcam-1"), ("2", "odd name;$(x)")]:
        env = {"PATH": "/usr/bin:/bin"}
        if task is not None:
            env["SLURM_ARRAY_TASK_ID"] = task
        out = subprocess.run(
            ["bash", "-c", "\n".join([*assignments, 'echo "$SCALABLE_WORKER_NAME"'])],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert out.stdout == f"{expected}\n", out.stderr


def test_packed_workers_share_the_job(work, make_cluster):
    cluster = make_cluster(workers_per_job=2)
    cluster.add_container(tag="gcam", cpus=4, memory="2G")
    script = cluster.job_script("gcam")
    assert "#SBATCH --cpus-per-task=4" in script and "#SBATCH --mem=2G" in script
    worker = script.splitlines()[-1]
    for arg in ("--nworkers 2", "--nthreads 2", "--memory-limit 1024MiB"):
        assert arg in worker
    cluster.add_container(tag="stitches", cpus=3, memory="1G")
    with pytest.raises(
        ValueError, match="cpus=3 cannot be shared by workers_per_job=2: use a multiple of 2"
    ):
        cluster.job_script("stitches")


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "2"])
def test_bad_workers_per_job_is_refused(work, k):
    said = re.escape(f"workers_per_job={k!r} must be a whole number")
    with pytest.raises(ValueError, match=said):
        SlurmCluster(interface="lo", workers_per_job=k)


def test_prologue_lines_come_before_the_worker_in_order(work, make_cluster):
    prologue = ["module load apptainer", "export TMPDIR=/scratch/$USER", "source env.sh"]
    cluster = make_cluster(job_script_prologue=prologue)
    cluster.add_container(tag="gcam", cpus=1, memory="1G")
    lines = cluster.job_script("gcam").splitlines()
    at = [lines.index(line) for line in prologue]
    assert at == sorted(at) and at[-1] < len(lines) - 1
    assert max(i for i, line in enumerate(lines) if line.startswith("#SBATCH")) < at[0]
    assert " apptainer exec " in f" {lines[-1]}"


def test_binds_and_env_are_quoted_for_the_shell(work, make_cluster):
    odd = work / "data dir;$(touch pwned)"
    odd.mkdir()
    cluster = make_cluster()
    cluster.add_container(
        tag="gcam",
        cpus=1,
        memory="1G",
        dirs={str(odd): "/in put"},
        env={"GREETING": "a $b 'c' \"d\"; e"},
    )
    worker = cluster.job_script("gcam").splitlines()[-1]
    argv = shlex.split(worker.split(" --name ")[0])
    assert argv[0] == "env" and "APPTAINERENV_GREETING=a $b 'c' \"d\"; e" in argv
    assert argv[argv.index("--bind") + 1] == f"{odd}:/in put"
    # the shell sees the same words: echo them through a real bash, which runs nothing
    out = subprocess.run(
        ["bash", "-c", "printf '%s\\n' " + worker.split(" python ")[0]],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.splitlines()[: len(argv)] == argv[: len(out.stdout.splitlines())]
    assert "--bind" in out.stdout.splitlines()
    assert not (work / "pwned").exists()
