"""``scalable bootstrap`` end to end against a real OpenSSH sshd on loopback.

The sshd (Debian's openssh-server, started here as root on a free port with its own config,
host key and authorized key) plays the HPC login host; a temp directory stands for the work
directory on its filesystem. rsync, the remote set-up, the kernelspec install, JupyterLab and the
``ssh -L`` forward all run for real. Docker and apptainer are the recording stand-ins of
``tests/fake_docker`` (no Docker engine runs on these machines). Authentications are counted in
sshd's VERBOSE log: one per bootstrap run, thanks to the ControlMaster connection.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from harness_procs import parent_death_signal

pytestmark = [pytest.mark.ssh,
              pytest.mark.skipif(not shutil.which("sshd") and not os.path.exists("/usr/sbin/sshd"),
                                 reason="openssh-server is not installed (.ci/run installs it)")]

HERE = Path(__file__).parent
REPO = HERE.parent
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Host:
    """The fake HPC login host: an sshd and the paths around it."""

    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.log = root / "sshd.log"
        self.work_dir = root / "hpc" / "work"
        self.key = root / "id_ed25519"
        self.ssh_config = root / "ssh_config"
        self.proc: subprocess.Popen | None = None

    def start(self):
        r = self.root
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(r / "host_key")], check=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True)
        shutil.copy(f"{self.key}.pub", r / "authorized_keys")
        (r / "sshd_config").write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {r / 'host_key'}",
            f"PidFile {r / 'sshd.pid'}", f"AuthorizedKeysFile {r / 'authorized_keys'}",
            "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password", "StrictModes no", "UsePAM no", "LogLevel VERBOSE",
            "AllowTcpForwarding yes", "MaxSessions 50", "MaxStartups 50",
            "Subsystem sftp /usr/lib/openssh/sftp-server", ""]))
        host_pub = (r / "host_key.pub").read_text().split()
        (r / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        # A ~/.ssh/config-style file with an alias, as HPC users have; bootstrap gets it with -F.
        self.ssh_config.write_text("\n".join([
            "Host hpc-test", "  HostName 127.0.0.1", f"  Port {self.port}", "  User root",
            f"  IdentityFile {self.key}", "  IdentitiesOnly yes",
            f"  UserKnownHostsFile {r / 'known_hosts'}", "  StrictHostKeyChecking yes",
            "  LogLevel ERROR", ""]))
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
        # The sshd dies with this test session even if the session is killed.
        self.proc = subprocess.Popen([SSHD, "-D", "-f", str(r / "sshd_config"), "-E", str(self.log)],
                                     preexec_fn=parent_death_signal)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                assert self.proc.poll() is None, self.log.read_text()
                time.sleep(0.05)
        raise RuntimeError("sshd did not start")

    def logins(self) -> int:
        return len(re.findall(r"Accepted publickey for", self.log.read_text()))

    def stop(self):
        # ssh clients of a bootstrap killed mid-test (their argv names this test's ssh_config);
        # their sshd sessions end with them.
        for entry in os.listdir("/proc"):
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if entry.isdigit() and str(self.ssh_config).encode() in argv:
                try:
                    os.kill(int(entry), signal.SIGTERM)
                except ProcessLookupError:
                    pass
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def host(tmp_path):
    h = Host(tmp_path / "host")
    h.root.mkdir()
    h.work_dir.mkdir(parents=True)
    h.start()
    yield h
    # JupyterLab started by bootstrap outlives it, as it should for users: stop it here.
    record = h.work_dir / ".scalable" / "jupyter.json"
    if record.exists():
        pid = json.loads(record.read_text())["pid"]
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    h.stop()


@pytest.fixture
def laptop(tmp_path):
    """Environment of the user's machine: its own HOME and config dir, fake docker first on PATH."""
    home = tmp_path / "laptop"
    home.mkdir()
    env = dict(os.environ)
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"),
               PATH=f"{HERE / 'fake_docker'}{os.pathsep}{os.environ['PATH']}",
               FAKE_DOCKER_LOG=str(home / "docker.log"), FAKE_DOCKER_STATE=str(home / "docker.json"),
               PYTHONUNBUFFERED="1")
    env.pop("SCALABLE_RELAY", None)
    return env


def bootstrap_args(host: Host, *extra: str) -> list[str]:
    return [sys.executable, "-m", "scalable.cli", "bootstrap", "--no-input",
            "--host", "hpc-test", "--ssh-config", str(host.ssh_config),
            "--work-dir", str(host.work_dir), "--targets", "stitches",
            "--dockerfile", str(REPO / "Dockerfile"), "--remote-python", sys.executable, *extra]


def run_bootstrap(env, args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


class Running:
    """A bootstrap run in the background that reached its URL and holds the forward open."""

    def __init__(self, env, args, timeout=300):
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, stdin=subprocess.DEVNULL)
        self.lines: list[str] = []
        self.url = None
        deadline = time.monotonic() + timeout
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            m = re.search(r"JupyterLab: (http://localhost:\d+/lab\?token=\w+)", line)
            if m:
                self.url = m.group(1)
                break
            if time.monotonic() > deadline:
                break
        self.elapsed = time.monotonic() - self.t0
        if self.url is None:
            self.proc.kill()
            raise AssertionError("no URL printed:\n" + "\n".join(self.lines) + self.proc.stderr.read())

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        out, err = self.proc.communicate(timeout=60)
        self.lines += out.splitlines()
        return self.proc.returncode

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as r:
        assert r.status == 200
        return json.loads(r.read())


def test_bootstrap_end_to_end_then_reconnect(host, laptop):
    run1 = Running(laptop, bootstrap_args(host, "--module-load", f"export PATH={HERE / 'fake_docker'}:$PATH"))
    try:
        assert host.logins() == 1, "the whole bootstrap must authenticate once (ControlMaster)"
        base, token = run1.url.split("/lab?token=")
        # JupyterLab answers through the forward, with the Scalable kernelspec listed.
        with urllib.request.urlopen(run1.url, timeout=30) as r:
            assert r.status == 200 and b"JupyterLab" in r.read()
        specs = get_json(f"{base}/api/kernelspecs?token={token}")["kernelspecs"]
    finally:
        assert run1.stop() == 0, run1.text
    # JupyterLab (and so its kernels) runs with the site's module line applied.
    pid = json.loads((host.work_dir / ".scalable" / "jupyter.json").read_text())["pid"]
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    path = next(v for v in environ if v.startswith(b"PATH=")).decode()
    assert str(HERE / "fake_docker") in path
    # The token is not on a command line other users could read with ps.
    assert token not in Path(f"/proc/{pid}/cmdline").read_text()
    # Images were copied into the layout on the "host".
    sifs = sorted(p.name for p in (host.work_dir / "containers").iterdir())
    assert sifs == ["scalable_container.sif", "stitches_container.sif"]
    assert (host.work_dir / "logs").is_dir()
    calls = [json.loads(l) for l in open(laptop["FAKE_DOCKER_LOG"])]
    builds = [c[c.index("--target") + 1] for c in calls if c[1] == "build"]
    assert builds == ["scalable", "stitches", "apptainer"]
    # The settings were remembered in the user's config dir, not in /tmp or the cwd.
    saved = json.loads(Path(laptop["XDG_CONFIG_HOME"], "scalable", "bootstrap.json").read_text())
    assert saved["host"] == "hpc-test" and saved["targets"] == ["stitches"]

    # A second plain run: every set-up step is done already; JupyterLab is reused.
    run2 = Running(laptop, [sys.executable, "-m", "scalable.cli", "bootstrap", "--no-input"])
    try:
        assert "reused" in run2.text and run2.url.split("token=")[1] == token
        assert run2.text.count("done already") == 7, run2.text
        get_json(run2.url.replace("/lab?", "/api/status?"))
    finally:
        run2.stop()
    assert host.logins() == 2
    assert len([json.loads(l) for l in open(laptop["FAKE_DOCKER_LOG"])]) == len(calls), "nothing rebuilt"

    # --connect only reconnects.
    run3 = Running(laptop, [sys.executable, "-m", "scalable.cli", "bootstrap", "--no-input", "--connect"])
    try:
        assert "[1/9]" not in run3.text and "reused" in run3.text
        get_json(run3.url.replace("/lab?", "/api/status?"))
    finally:
        run3.stop()
    assert host.logins() == 3

    # --stop ends the JupyterLab bootstrap started there.
    pid = json.loads((host.work_dir / ".scalable" / "jupyter.json").read_text())["pid"]
    r = run_bootstrap(laptop, [sys.executable, "-m", "scalable.cli", "bootstrap", "--stop"])
    assert r.returncode == 0 and f"stopped JupyterLab pid {pid}" in r.stdout, r.stdout + r.stderr
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    print(f"\nbootstrap first run {run1.elapsed:.1f} s, re-run {run2.elapsed:.1f} s, "
          f"connect {run3.elapsed:.1f} s")
    assert "scalable" in specs, f"kernelspecs: {sorted(specs)}\n{run1.text}"
    spec = specs["scalable"]["spec"]
    assert spec["display_name"] == "Scalable"
    assert str(host.work_dir / "containers" / "scalable_container.sif") in spec["argv"]
    assert (host.work_dir / ".scalable" / "jupyter" / "share" / "jupyter" / "kernels" / "scalable").is_dir()


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
    calls = [json.loads(l) for l in open(laptop["FAKE_DOCKER_LOG"])]
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
    proc = subprocess.Popen(bootstrap_args(host, "--until", "convert"), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
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
    calls = [json.loads(l) for l in open(laptop["FAKE_DOCKER_LOG"])]
    builds = [c[c.index("--target") + 1] for c in calls if c[1] == "build"]
    # stitches was interrupted and built again; scalable was not.
    assert builds == ["scalable", "stitches", "stitches", "apptainer"]


def test_first_run_asks_once_in_a_terminal_then_remembers(host, laptop):
    import pty
    import select

    master, slave = pty.openpty()
    args = [sys.executable, "-m", "scalable.cli", "bootstrap", "--ssh-config", str(host.ssh_config),
            "--dockerfile", str(REPO / "Dockerfile"), "--remote-python", sys.executable,
            "--module-load", f"PATH={HERE / 'fake_docker'}:$PATH", "--until", "layout"]
    proc = subprocess.Popen(args, env=laptop, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    answers = {"HPC login host": "hpc-test", "User name": "", "Work directory": str(host.work_dir),
               "identity file": "", "Container targets": "hector"}
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
    r = run_bootstrap(laptop, [sys.executable, "-m", "scalable.cli", "bootstrap", "--until", "layout"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("done already") == 4
    saved = json.loads(Path(laptop["XDG_CONFIG_HOME"], "scalable", "bootstrap.json").read_text())
    assert (saved["host"], saved["targets"], saved["work_dir"]) == ("hpc-test", ["hector"], str(host.work_dir))


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


def test_connect_before_any_set_up_says_what_to_run(host, laptop):
    args = bootstrap_args(host, "--connect")
    i = args.index("--remote-python")
    del args[i:i + 2]
    r = run_bootstrap(laptop, args)
    assert r.returncode == 1
    assert "does not exist on hpc-test: run `scalable bootstrap` without --connect" in r.stderr, r.stderr
    assert host.logins() == 1


def test_default_host_env_is_a_venv_in_the_work_dir(host, laptop):
    args = bootstrap_args(host)
    i = args.index("--remote-python")
    del args[i:i + 2]
    # The venv sees the base interpreter's packages, so pip finds scalable[jupyter] satisfied
    # and the test needs no downloads; creating the venv, pip and the probe all run for real.
    args += ["--remote-base-python", sys.executable, "--system-site-packages"]
    run = Running(laptop, args)
    try:
        venv_python = str(host.work_dir / ".venv" / "bin" / "python")
        assert f"creating {host.work_dir / '.venv'}" in run.text
        assert f"installing scalable[jupyter]==" in run.text and f"host python: {venv_python}" in run.text
        pid = json.loads((host.work_dir / ".scalable" / "jupyter.json").read_text())["pid"]
        assert Path(f"/proc/{pid}/cmdline").read_text().split("\0")[0] == venv_python
        base, token = run.url.split("/lab?token=")
        spec = get_json(f"{base}/api/kernelspecs?token={token}")["kernelspecs"]["scalable"]["spec"]
        assert spec["argv"][0] == venv_python
    finally:
        run.stop()


async def execute(base: str, token: str, kernel_id: str, code: str, timeout: float = 120) -> str:
    """Run ``code`` in a kernel through JupyterLab's websocket; return its stdout."""
    import asyncio
    import uuid

    from tornado.websocket import websocket_connect

    ws = await websocket_connect(f"{base.replace('http', 'ws', 1)}/api/kernels/{kernel_id}/channels?token={token}")
    msg_id = uuid.uuid4().hex
    ws.write_message(json.dumps({
        "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
                   "msg_type": "execute_request", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True}}))
    out = []
    async def collect():
        while True:
            msg = json.loads(await ws.read_message())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                out.append(msg["content"]["text"])
            elif msg["msg_type"] == "error":
                out.append("\n".join(msg["content"]["traceback"]))
            elif msg["msg_type"] == "execute_reply":
                return
    try:
        await asyncio.wait_for(collect(), timeout)
    finally:
        ws.close()
    return "".join(out)


def test_scalable_kernel_runs_in_the_copied_image_through_the_forward(host, laptop):
    import asyncio

    # The site's module line puts the apptainer stand-in (tests/bin) on the host's PATH.
    run = Running(laptop, bootstrap_args(host, "--module-load", f"export PATH={HERE / 'bin'}:$PATH"))
    try:
        base, token = run.url.split("/lab?token=")
        req = urllib.request.Request(f"{base}/api/kernels?token={token}", method="POST",
                                     data=json.dumps({"name": "scalable"}).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            kernel = json.loads(r.read())
        out = asyncio.run(execute(base, token, kernel["id"],
                                  "import os; print(os.environ.get('APPTAINER_CONTAINER'))"))
        assert out.strip() == str(host.work_dir / "containers" / "scalable_container.sif"), out
        urllib.request.urlopen(urllib.request.Request(
            f"{base}/api/kernels/{kernel['id']}?token={token}", method="DELETE"), timeout=60)
    finally:
        run.stop()
