"""Secure by default: another user of the machine reaches neither a cluster nor its dashboard.

The neighbour is a real second Unix user (``useradd -M``), running the same Python through
bubblewrap (``/root`` is private, so its ``.pyenv`` is bound into a fresh ``/root``) after
``setpriv`` drops to its uid: a plain ``distributed.Client``, a TLS client with certificates of
its own, and HTTP requests to the scheduler's and every worker's port.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import stat
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
import warnings

import dask
import pytest
from distributed.security import Security

from scalable import LocalCluster, ScalableClient, SlurmCluster, security as sec
from scalable.security import InsecureClusterWarning
from waiting import wait_for

#: a word only the owner's tasks carry: no answer to the neighbour may contain it
SECRET_WORD = "quietlemur"

NEIGHBOUR = r"""
import json, os, sys, urllib.error, urllib.request
address, ports, tls_dir, word = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
out = {"uid": os.getuid(), "http": []}
from distributed import Client
from distributed.security import Security
for kind, security in (("plain", None), ("own-cert", Security.temporary())):
    try:
        with Client(address, security=security, timeout=15) as client:
            out[kind] = "ran as uid %s" % client.submit(os.getuid, pure=False).result(timeout=30)
    except Exception as e:
        out[kind] = "refused: %s" % type(e).__name__
try:
    out["tls_dir"] = os.listdir(tls_dir)
except OSError as e:
    out["tls_dir"] = "refused: %s" % type(e).__name__
for port in ports:
    for path in ("/", "/status", "/sitemap.json", "/metrics", "/health", "/info/main/workers.html",
                 "/json/identity.json", "/individual-task-stream", "/profile"):
        try:
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=15) as r:
                code, body = r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            code, body = e.code, e.read().decode(errors="replace")
        out["http"].append([port, path, code, word in body, body[:300]])
print(json.dumps(out))
"""


@pytest.fixture
def neighbour(tmp_path_factory):
    """A second Unix user, made for this test and removed after it: its name."""
    if os.geteuid() != 0 or not shutil.which("bwrap") or not shutil.which("setpriv"):
        pytest.fail("the neighbour fixture makes a Unix user and needs root, bwrap and setpriv")
    name = f"scnb{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], check=True, timeout=60)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=False, timeout=60)


def as_neighbour(name: str, code: str, *args: str) -> subprocess.CompletedProcess:
    """Run Python ``code`` as user ``name``: this interpreter, seen through a private /root."""
    python = os.path.realpath(sys.executable)
    binds = []
    if python.startswith("/root/"):  # /root is 0700: show the neighbour only the interpreter
        top = "/root/" + python[len("/root/") :].split("/")[0]
        binds = ["--tmpfs", "/root", "--ro-bind", top, top]
    argv = [
        "bwrap",
        "--bind",
        "/",
        "/",
        "--dev-bind",
        "/dev",
        "/dev",
        *binds,
        "--",
        "setpriv",
        "--reuid",
        name,
        "--regid",
        name,
        "--clear-groups",
        "env",
        "-i",
        "HOME=/nonexistent",
        "PATH=/usr/bin:/bin",
        python,
        "-c",
        code,
        *args,
    ]
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=300, cwd="/")


def attack(name, cluster, tls_dir) -> dict:
    ports = [cluster.dashboard_port] + [
        ws.services["dashboard"] for ws in list(cluster.scheduler.workers.values())
    ]
    proc = as_neighbour(
        name, NEIGHBOUR, cluster.scheduler_address, json.dumps(ports), tls_dir, SECRET_WORD
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_owner_tasks(cluster, tag):
    """Tasks whose names (``quietlemur-...``) a leaking dashboard or metrics page would show."""
    with ScalableClient(cluster) as client:
        client.wait_for_workers(1, timeout=180)
        futures = [
            client.submit(pow, 2, i, tag=tag, key=f"{SECRET_WORD}-{uuid.uuid4().hex}")
            for i in range(3)
        ]
        assert client.gather(futures) == [1, 2, 4]


def assert_nothing_reached(seen: dict, cluster):
    assert seen["uid"] != 0
    # no client without the cluster's certificate connects, so none runs anything
    assert seen["plain"].startswith("refused"), seen["plain"]
    assert seen["own-cert"].startswith("refused"), seen["own-cert"]
    assert isinstance(seen["tls_dir"], str) and seen["tls_dir"].startswith("refused")
    answers = {}
    for port, path, code, leaked, body in seen["http"]:
        assert not leaked, (port, path, body)
        answers.setdefault(port, {})[path] = (code, body)
    # the scheduler's port: 404 to everything without the secret prefix
    assert {code for code, _ in answers.pop(cluster.dashboard_port).values()} == {404}
    # each worker's port: 404, or a sitemap naming nothing but itself
    assert answers  # the workers' ports were tried
    for paths in answers.values():
        for path, (code, body) in paths.items():
            if path == "/sitemap.json":
                assert code == 200 and json.loads(body) == {"paths": ["/sitemap.json"]}
            else:
                assert code == 404, (path, body)


@pytest.mark.root
def test_neighbour_reaches_nothing_of_a_local_cluster(neighbour, tmp_path, apptainer, make_image):
    make_image("boxed", tmp_path / "containers")
    with LocalCluster(work_dir=str(tmp_path)) as cluster:
        cluster.add_container(tag="plain", cpus=1, memory="1G")
        cluster.add_container(tag="boxed", cpus=1, memory="1G")  # a worker through the runtime
        cluster.add_workers(tag="plain", n=1)
        cluster.add_workers(tag="boxed", n=1)
        run_owner_tasks(cluster, "plain")
        run_owner_tasks(cluster, "boxed")
        wait_for(lambda: len(cluster.scheduler.workers) == 2, 120, "both workers")
        seen = attack(neighbour, cluster, cluster._tls.directory)
        assert_nothing_reached(seen, cluster)
        # the owner, with the link, reads the dashboard
        with urllib.request.urlopen(cluster.dashboard_link, timeout=30) as page:
            assert page.status == 200


@pytest.mark.root
@pytest.mark.slurm
def test_neighbour_reaches_nothing_of_a_slurm_cluster(
    neighbour, tmp_path, apptainer, make_image, monkeypatch
):
    make_image("gcam", tmp_path / "containers")
    monkeypatch.chdir(tmp_path)
    with SlurmCluster(queue="slurm", interface="lo") as cluster:
        tls_dir = cluster._tls.directory
        assert os.path.dirname(tls_dir) == str(tmp_path / ".scalable" / "tls")
        cluster.add_container(tag="gcam", cpus=1, memory="512M")
        cluster.add_workers(tag="gcam", n=2)
        run_owner_tasks(cluster, "gcam")
        wait_for(lambda: len(cluster.scheduler.workers) == 2, 180, "both workers")
        # were the work directory open to others, its keys would still be the owner's only
        assert stat.S_IMODE(os.lstat(tls_dir).st_mode) == 0o700
        assert {
            stat.S_IMODE(os.lstat(os.path.join(tls_dir, f)).st_mode) for f in os.listdir(tls_dir)
        } == {0o600}
        seen = attack(neighbour, cluster, tls_dir)
        assert_nothing_reached(seen, cluster)
    assert not os.path.exists(tls_dir)


# -- the same user: defaults, opt-out, the private directory ------------------------------------


def test_tls_by_default_files_private_and_removed_at_close(tmp_path):
    with LocalCluster(work_dir=str(tmp_path)) as a, LocalCluster(work_dir=str(tmp_path)) as b:
        assert a.scheduler_address.startswith("tls://")
        d = a._tls.directory
        assert d != b._tls.directory  # never reused
        assert stat.S_IMODE(os.lstat(d).st_mode) == 0o700 and not os.path.islink(d)
        files = os.listdir(d)
        assert files and all(
            stat.S_IMODE(os.lstat(os.path.join(d, f)).st_mode) == 0o600 for f in files
        )
        a.add_container(tag="t", cpus=1, memory="1G")
        a.add_workers(tag="t", n=1)
        with ScalableClient(a) as client:  # takes the cluster's credentials
            assert client.submit(sum, [1, 2], tag="t").result(timeout=60) == 3
        entry = a._registry_entry()
        assert entry["dashboard_prefix"] == a.dashboard_prefix
        assert "PRIVATE KEY" in entry["tls"]["key"]  # the server needs no path of the kernel's
    assert not os.path.exists(d)


def test_dashboard_answers_only_under_its_prefix(tmp_path):
    with LocalCluster(work_dir=str(tmp_path)) as cluster:
        port, secret = cluster.dashboard_port, cluster.dashboard_prefix
        assert cluster.dashboard_link == f"http://127.0.0.1:{port}{secret}/status"
        with urllib.request.urlopen(cluster.dashboard_link, timeout=30) as page:
            assert page.status == 200 and "Dask" in page.read().decode()
        for root in (secret, secret + "/"):  # the root redirects into the prefix
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{root}", timeout=30) as page:
                assert page.url == cluster.dashboard_link
        for path in ("/", "/status", "/sitemap.json", "/health", secret[:-1] + "/status"):
            with pytest.raises(urllib.error.HTTPError) as info:
                urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30)
            assert info.value.code == 404
            assert secret.strip("/") not in info.value.read().decode()


def test_dashboard_secret_is_compared_in_constant_time(tmp_path, monkeypatch):
    # a comparison that stops at the first wrong character would tell a guesser, by its
    # timing, how much of the secret they have
    import hmac

    compared, real = [], hmac.compare_digest

    def compare_digest(a, b):
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", compare_digest)
    with LocalCluster(work_dir=str(tmp_path)) as cluster:
        secret = cluster.dashboard_prefix
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(
                f"http://127.0.0.1:{cluster.dashboard_port}{secret[:-1]}x/", timeout=30
            )
        with urllib.request.urlopen(cluster.dashboard_link, timeout=30) as page:
            assert page.status == 200
    assert compared.count(secret.strip("/").encode()) >= 2


def test_security_false_warns_and_speaks_plain_tcp(tmp_path):
    with pytest.warns(
        InsecureClusterWarning, match="anyone who can reach it .* can run code as you"
    ):
        cluster = LocalCluster(work_dir=str(tmp_path), security=False)
    with cluster:
        assert cluster.scheduler_address.startswith("tcp://") and cluster._tls is None
        assert cluster._registry_entry()["tls"] is None
    with (
        dask.config.set({"scalable.security": False}),
        pytest.warns(InsecureClusterWarning),
        LocalCluster(work_dir=str(tmp_path)) as cluster,
    ):
        assert cluster.scheduler_address.startswith("tcp://")


def test_explicit_security_is_kept(tmp_path):
    given = Security.temporary()
    with warnings.catch_warnings():
        warnings.simplefilter("error", InsecureClusterWarning)
        with LocalCluster(work_dir=str(tmp_path), security=given) as cluster:
            assert cluster._tls.original is given
            with ScalableClient(cluster.scheduler_address, security=given, timeout=30) as client:
                assert client.scheduler_info()["address"] == cluster.scheduler_address
        with LocalCluster(work_dir=str(tmp_path), security=True) as cluster:
            assert cluster.scheduler_address.startswith("tls://")
    with pytest.raises(TypeError, match="pass True .*, False, or a distributed.security.Security"):
        LocalCluster(work_dir=str(tmp_path), security="yes")


def test_slurm_tls_directory_in_the_work_dir_must_be_private(tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    # a link planted where .scalable goes is never followed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (work / ".scalable").symlink_to(elsewhere)
    with pytest.raises(ValueError, match=r"\.scalable is not a directory .*: .*remove it"):
        SlurmCluster(work_dir=str(work))
    assert os.listdir(elsewhere) == []
    (work / ".scalable").unlink()
    # a .scalable others can write
    (work / ".scalable").mkdir(mode=0o700)
    os.chmod(work / ".scalable", 0o777)
    with pytest.raises(ValueError, match=r"no one else can write: run `chmod go-w .*\.scalable`"):
        SlurmCluster(work_dir=str(work))
    assert os.listdir(work / ".scalable") == []
    os.chmod(work / ".scalable", 0o700)
    fd, path = sec.tls_parent(str(work))
    os.close(fd)
    assert path == str(work / ".scalable" / "tls")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700


# -- keys a killed process left -----------------------------------------------------------------


@pytest.mark.slurm
def test_cleanup_removes_the_keys_of_a_killed_cluster_and_nothing_else(slurm, tmp_path):
    script = (
        "import time; from scalable import SlurmCluster\n"
        "c = SlurmCluster(queue='slurm', interface='lo')\n"
        "print(c.cluster_id, c._tls.directory, flush=True)\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    try:
        ready = select.select([proc.stdout], [], [], 180)[0]  # never wait for ever in CI
        assert ready, "the cluster process did not start within 180 s"
        dead_id, keys = proc.stdout.readline().split()
    finally:
        proc.send_signal(signal.SIGKILL)  # no close(), no atexit: the keys stay
        proc.wait()
    assert os.listdir(keys)
    parent = tmp_path / ".scalable" / "tls"
    # what cleanup must leave: a link named like a dead cluster's directory (never followed),
    # and a directory of that name holding something scalable did not write
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "key0.pem").write_text("mine")
    (parent / f"{dead_id}-{'0' * 12}").symlink_to(elsewhere)
    odd = parent / f"{dead_id}-{'1' * 12}"
    odd.mkdir()
    (odd / "key0.pem").write_text("x")
    (odd / "notes.txt").write_text("x")
    with pytest.warns(
        UserWarning, match=r"1 TLS key director.*no longer running .*scalable cleanup"
    ):
        live = SlurmCluster(queue="slurm", interface="lo", work_dir=str(tmp_path))
    with live:
        out = subprocess.run(
            [sys.executable, "-m", "scalable.cli", "cleanup"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert keys in out.stdout and not os.path.exists(keys)
        assert os.listdir(live._tls.directory)  # a live cluster's keys are its own
        assert (elsewhere / "key0.pem").read_text() == "mine"
        assert os.path.islink(parent / f"{dead_id}-{'0' * 12}")
        assert sorted(os.listdir(odd)) == ["key0.pem", "notes.txt"]
    assert not os.path.exists(live._tls.directory or keys)
