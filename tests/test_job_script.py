"""Job-script text, input bounds and signal handlers, without Slurm: a SlurmCluster writes its
scripts and checks its inputs before anything is submitted."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from scalable import SlurmCluster
from scalable.containers import ContainerError

#: every character a shell or sbatch treats specially, short of what no runtime can bind
WEIRD = 'my "runs" it\'s #1 $HOME ;&|<>(){}*?[] %x'


@pytest.fixture
def weird_work(tmp_path, make_image):
    work = tmp_path / WEIRD
    make_image("gcam", work / "containers")
    (work / "in data").mkdir(parents=True)
    return work


def cluster(work, **kw):
    return SlurmCluster(queue="slurm", interface="lo", work_dir=str(work), **kw)


def directives(script) -> dict:
    """``#SBATCH`` options as sbatch reads them (it honours shell quotes on these lines)."""
    out = {}
    for line in script.splitlines():
        if line.startswith("#SBATCH "):
            words = shlex.split(line[len("#SBATCH ") :])
            if "=" in words[0]:
                words = words[0].split("=", 1)
            out[words[0]] = words[1] if len(words) > 1 else None
    return out


def worker_argv(script) -> list:
    """The worker command as bash splits it (the only variable in it is the worker's name)."""
    line = script.rstrip().splitlines()[-1]
    return shlex.split(line.replace("${SCALABLE_WORKER_NAME}", "gcam-0"))


def test_every_path_in_the_script_is_quoted(weird_work):
    with cluster(weird_work) as c:
        c.add_container(tag="gcam", dirs={"in data": "/in"}, env={"A": "x,B=y z", "C": "$HOME"})
        script = c.job_script("gcam")
    # Slurm expands "%" patterns in log paths: a literal one in the directory is doubled
    assert directives(script)["-o"] == str(weird_work).replace("%", "%%") + "/logs/%x-%A_%a.log"
    argv = worker_argv(script)
    assert argv[:3] == ["env", "APPTAINERENV_A=x,B=y z", "APPTAINERENV_C=$HOME"]
    assert argv[argv.index("--bind") + 1] == f"{weird_work}/in data:/in"
    assert argv[argv.index("--home") + 1] == str(weird_work)
    assert argv[argv.index("--pwd") + 1] == str(weird_work)
    assert f"{weird_work}/containers/gcam_container.sif" in argv
    assert "--env" not in argv  # "--env A=x,B=y z" would set B too


def test_tls_files_under_a_work_dir_with_spaces_are_quoted(tmp_path, make_image):
    # (no "$" here: dask-jobqueue expands variables in the directory it writes TLS files to)
    weird_work = tmp_path / 'my "tls" it\'s #1 %x'
    make_image("gcam", weird_work / "containers")
    with cluster(weird_work, security=True) as c:
        c.add_container(tag="gcam")
        argv = worker_argv(c.job_script("gcam"))
        for option in ("--tls-ca-file", "--tls-cert", "--tls-key"):
            path = argv[argv.index(option) + 1]
            assert path.startswith(f"{weird_work}/.scalable/tls/") and os.path.isfile(path)
    assert not os.path.exists(path)  # removed at close


@pytest.mark.parametrize(
    "memory, mem, limit",
    [
        ("1500M", "1500M", "1500MiB"),  # dask-jobqueue asked for 2G
        ("20G", "20G", "20480MiB"),
        ("512M", "512M", "512MiB"),
        ("1.5 GB", "1431M", "1500000000"),  # decimal bytes: Slurm gets whole MiB, rounded up
        ("2.5G", "2560M", "2560MiB"),
        (3 * 2**20 + 1, "4M", str(3 * 2**20 + 1)),
    ],
)
def test_slurm_is_asked_for_exactly_the_memory_of_the_tag(tmp_path, make_image, memory, mem, limit):
    make_image("gcam", tmp_path / "containers")
    with cluster(tmp_path) as c:
        c.add_container(tag="gcam", memory=memory)
        script = c.job_script("gcam")
    assert directives(script)["--mem"] == mem
    argv = worker_argv(script)
    assert argv[argv.index("--memory-limit") + 1] == limit


def test_packed_workers_share_the_job_memory_exactly(tmp_path, make_image):
    make_image("gcam", tmp_path / "containers")
    with cluster(tmp_path, workers_per_job=2) as c:
        c.add_container(tag="gcam", cpus=2, memory="3000M")
        script = c.job_script("gcam")
    assert directives(script)["--mem"] == "3000M"
    argv = worker_argv(script)
    assert argv[argv.index("--memory-limit") + 1] == "1500MiB"
    assert argv[argv.index("--nworkers") + 1] == "2"


@pytest.mark.parametrize("bad", ["a:b", "a,b", "back\\slash", "new\nline"])
def test_a_work_dir_no_runtime_can_carry_is_a_sentence(tmp_path, bad):
    work = tmp_path / bad
    work.mkdir()
    with pytest.raises(ContainerError, match="work_dir .* use a directory without them"):
        cluster(work)


def test_n_is_bounded_and_answered_at_once(tmp_path, make_image):
    make_image("gcam", tmp_path / "containers")
    with cluster(tmp_path) as c:
        c.add_container(tag="gcam")
        for call in (
            lambda: c.add_workers(n=10**20, tag="gcam"),
            lambda: c.scale_tag("gcam", 99999999999999999999),
            lambda: c.scale(1001, tag="gcam"),
            lambda: c.remove_workers(n=10**20, tag="gcam"),
        ):
            started = time.monotonic()
            with pytest.raises(
                ValueError, match=r"more than scalable.max-workers-per-tag \(1000\)"
            ):
                call()
            assert time.monotonic() - started < 5  # a check, not 10**20 worker specs
        assert c.targets == {"gcam": 0} and not c.worker_spec


def test_the_bound_is_a_setting(tmp_path, make_image):
    import dask

    make_image("gcam", tmp_path / "containers")
    with dask.config.set({"scalable.max-workers-per-tag": 3}), cluster(tmp_path) as c:
        c.add_container(tag="gcam")
        with pytest.raises(ValueError, match=r"max-workers-per-tag \(3\)"):
            c.add_workers(n=4, tag="gcam", wait=False)


# -- signal handlers ----------------------------------------------------------------------------


def test_handlers_are_installed_while_a_cluster_is_open_and_restored_after(tmp_path, make_image):
    calls = []

    def previous(signum, frame):
        calls.append(signum)

    before_term = signal.signal(signal.SIGTERM, previous)
    before_hup = signal.getsignal(signal.SIGHUP)
    try:
        first = cluster(tmp_path)
        installed = signal.getsignal(signal.SIGTERM)
        assert installed is not previous and signal.getsignal(signal.SIGHUP) is installed
        second = cluster(tmp_path)
        first.close()
        assert signal.getsignal(signal.SIGTERM) is installed  # one cluster still open
        second.close()
        assert signal.getsignal(signal.SIGTERM) is previous
        assert signal.getsignal(signal.SIGHUP) is before_hup

        # while open, a SIGTERM closes the cluster, then reaches the handler that was there
        third = cluster(tmp_path)
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 60
        while not calls and time.monotonic() < deadline:
            time.sleep(0.05)
        assert calls == [signal.SIGTERM]
        assert third.status.name == "closed"
        assert signal.getsignal(signal.SIGTERM) is previous
    finally:
        signal.signal(signal.SIGTERM, before_term)


def test_an_ignored_signal_stays_ignored(tmp_path):
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with cluster(tmp_path):
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, before)


def _python(code, **kw):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.Popen(
        [sys.executable, "-c", code],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def test_importing_scalable_leaves_signal_handlers_as_found():
    code = (
        "import signal\n"
        "sigs = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)\n"
        "before = [signal.getsignal(s) for s in sigs]\n"
        "import scalable, scalable.slurm, scalable.slurm_jobs, dask_jobqueue\n"
        "from scalable import *\n"
        "from scalable import SlurmCluster, LocalCluster, ScalableClient, JobQueueCluster\n"
        "after = [signal.getsignal(s) for s in sigs]\n"
        "print(before == after, after)\n"
    )
    proc = _python(code)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert out.startswith("True"), out


def test_ctrl_c_in_a_script_that_imported_scalable_exits_non_zero():
    code = (
        "import sys, time\n"
        "from scalable import SlurmCluster\n"
        "print('ready', flush=True)\n"
        "time.sleep(600)\n"
        "print('slept through', flush=True)\n"
    )
    proc = _python(code)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, (out, err)
    assert "KeyboardInterrupt" in err


def test_a_fifo_or_link_target_at_a_job_log_name_neither_blocks_nor_is_read(tmp_path, make_image):
    # a log directory others can write lets them plant a FIFO where a job's log will be: the
    # scheduler's event loop reads logs (why did a worker never connect?) and must not block
    from types import SimpleNamespace

    make_image("gcam", tmp_path / "containers")
    c = cluster(tmp_path)
    try:
        c.add_container("gcam")
        old = os.umask(0o002)
        try:
            c._worker_spec("gcam", "gcam-0")
        finally:
            os.umask(old)
        assert os.stat(c.log_directory).st_mode & 0o777 == 0o755  # not group-writable
        job = SimpleNamespace(job_id="12_0", tag="gcam")
        fifo = c._log_path(job)
        os.mkfifo(fifo)
        seen = {}
        reader = threading.Thread(
            target=lambda: seen.update(ended=c._ended_outside(job), log=c._read_log(job)),
            daemon=True,
        )
        reader.start()
        reader.join(120)  # a blocking open never returns
        blocked = reader.is_alive()
        while reader.is_alive():  # let it go: a writer that opens and closes ends each read
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            reader.join(1)
        assert not blocked, "reading a job log blocked on a FIFO planted at its name"
        assert seen == {"ended": True, "log": "(no log yet: the job has not started)"}
    finally:
        c.close()
