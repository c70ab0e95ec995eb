"""The fake HPC login host for ``scalable bootstrap``'s tests, and helpers to drive the command.

The host is a real OpenSSH sshd (Debian's openssh-server, started as root on a free port with its
own config, host key and authorized key); a temp directory stands for the work directory on its
filesystem. The "laptop" is an environment with its own HOME/XDG dirs and the recording
docker/apptainer stand-ins of ``tests/fake_docker`` first on PATH (no Docker engine runs on these
machines). Authentications are counted in sshd's VERBOSE log.
"""

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
from jupyter_fixtures import execute_request

HERE = Path(__file__).parent
REPO = HERE.parent
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
#: mark for modules that need the sshd (.ci/run installs openssh-server)
needs_sshd = pytest.mark.skipif(not os.path.exists(SSHD), reason="openssh-server is not installed")


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
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(r / "host_key")], check=True
        )
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True
        )
        shutil.copy(f"{self.key}.pub", r / "authorized_keys")
        (r / "sshd_config").write_text(
            "\n".join(
                [
                    f"Port {self.port}",
                    "ListenAddress 127.0.0.1",
                    f"HostKey {r / 'host_key'}",
                    f"PidFile {r / 'sshd.pid'}",
                    f"AuthorizedKeysFile {r / 'authorized_keys'}",
                    "PubkeyAuthentication yes",
                    "PasswordAuthentication no",
                    "KbdInteractiveAuthentication no",
                    "PermitRootLogin prohibit-password",
                    "StrictModes no",
                    "UsePAM no",
                    "LogLevel VERBOSE",
                    "AllowTcpForwarding yes",
                    "MaxSessions 50",
                    "MaxStartups 50",
                    "Subsystem sftp /usr/lib/openssh/sftp-server",
                    "",
                ]
            )
        )
        host_pub = (r / "host_key.pub").read_text().split()
        (r / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        # A ~/.ssh/config-style file with an alias, as HPC users have; bootstrap gets it with -F.
        self.ssh_config.write_text(
            "\n".join(
                [
                    "Host hpc-test",
                    "  HostName 127.0.0.1",
                    f"  Port {self.port}",
                    "  User root",
                    f"  IdentityFile {self.key}",
                    "  IdentitiesOnly yes",
                    f"  UserKnownHostsFile {r / 'known_hosts'}",
                    "  StrictHostKeyChecking yes",
                    "  LogLevel ERROR",
                    "",
                ]
            )
        )
        os.makedirs("/run/sshd", exist_ok=True)  # sshd's privilege separation directory
        # The sshd dies with this test session even if the session is killed.
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-f", str(r / "sshd_config"), "-E", str(self.log)],
            preexec_fn=parent_death_signal,
        )
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
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_CACHE_HOME=str(home / ".cache"),
        PATH=f"{HERE / 'fake_docker'}{os.pathsep}{os.environ['PATH']}",
        FAKE_DOCKER_LOG=str(home / "docker.log"),
        FAKE_DOCKER_STATE=str(home / "docker.json"),
        PYTHONUNBUFFERED="1",
    )
    env.pop("SCALABLE_RELAY", None)
    return env


def bootstrap_args(host: Host, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "scalable.cli",
        "bootstrap",
        "--no-input",
        "--host",
        "hpc-test",
        "--ssh-config",
        str(host.ssh_config),
        "--work-dir",
        str(host.work_dir),
        "--targets",
        "stitches",
        "--dockerfile",
        str(REPO / "Dockerfile"),
        "--remote-python",
        sys.executable,
        *extra,
    ]


def run_bootstrap(env, args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


class Running:
    """A bootstrap run in the background that reached its URL and holds the forward open."""

    def __init__(self, env, args, timeout=300):
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen(
            args,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
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
            raise AssertionError(
                "no URL printed:\n" + "\n".join(self.lines) + self.proc.stderr.read()
            )

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


async def execute(base: str, token: str, kernel_id: str, code: str, timeout: float = 120) -> str:
    """Run ``code`` in a kernel through JupyterLab's websocket; return its stdout."""
    import asyncio

    from tornado.websocket import websocket_connect

    ws = await websocket_connect(
        f"{base.replace('http', 'ws', 1)}/api/kernels/{kernel_id}/channels?token={token}"
    )
    msg_id, message = execute_request(code)
    ws.write_message(json.dumps(message))
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
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                return  # iopub's idle follows all output (execute_reply, on shell, may not)

    try:
        await asyncio.wait_for(collect(), timeout)
    finally:
        ws.close()
    return "".join(out)
