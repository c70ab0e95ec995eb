"""The relay against a hostile neighbour and a hostile load, with real processes and sockets.

A second Unix user, created here (``useradd -M``) and removed afterwards, plants symbolic links
where the relay expects its directory and log, and serves a fake relay that forges job ids. The
relay must follow no link, change no permission it did not create, and the client must send
nothing to a socket another uid serves. Then load: a thread that cannot start, a burst of
connections, a relay that never answers, argv that is not text, JSON nested too deeply.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import select
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import dask
import pytest

from scalable.relay import protocol
from scalable.relay.client import relay_arun, relay_run
from scalable.relay.server import RelayServer
from scalable.relay.shim import write_shims
from scalable.runner import CommandError
from waiting import wait_for

# --- the neighbour ---------------------------------------------------------------------------

#: a fake relay run by the neighbour: records how many bytes each client sent, forges a job id
FAKE_RELAY = r"""
import json, os, socket, struct, sys
path, record = sys.argv[1], sys.argv[2]
os.umask(0)
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    c.settimeout(1.0)
    got = 0
    try:
        while chunk := c.recv(65536):
            got += len(chunk)
    except OSError:
        pass
    out = b"Submitted batch job 666\n"
    head = json.dumps({"v": 1, "returncode": 0, "stdout": len(out), "stderr": 0, "error": None,
                       "timed_out": False}).encode()
    try:
        c.sendall(struct.pack(">I", len(head)) + head + out)
    except OSError:
        pass
    c.close()
    with open(record, "a") as f:
        f.write(f"{got}\n")
"""


class Neighbour:
    """Another Unix user on this machine, and a /tmp-like sticky directory we share."""

    def __init__(self):
        self.name = f"sct{os.getpid()}{secrets.token_hex(3)}"
        subprocess.run(
            ["useradd", "-M", "-U", "-s", "/usr/sbin/nologin", self.name],
            check=True,
            capture_output=True,
        )
        import pwd

        entry = pwd.getpwnam(self.name)
        self.uid, self.gid = entry.pw_uid, entry.pw_gid
        self.shared = Path(tempfile.mkdtemp(prefix="scalable-shared-"))
        os.chmod(self.shared, 0o1777)  # like /tmp: anyone may create, only owners remove
        self.procs: list[subprocess.Popen] = []

    def argv(self, *argv) -> list[str]:
        return [
            "setpriv",
            "--reuid",
            str(self.uid),
            "--regid",
            str(self.gid),
            "--clear-groups",
            *argv,
        ]

    def run(self, *argv):
        return subprocess.run(self.argv(*argv), check=True, capture_output=True, cwd="/")

    def plant_link(self, target, link) -> None:
        self.run("ln", "-s", str(target), str(link))
        assert os.lstat(link).st_uid == self.uid

    def start(self, *argv) -> subprocess.Popen:
        proc = subprocess.Popen(self.argv(*argv), stdout=subprocess.PIPE, text=True, cwd="/")
        self.procs.append(proc)
        return proc

    def remove(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
        shutil.rmtree(self.shared, ignore_errors=True)
        subprocess.run(["userdel", self.name], check=False, capture_output=True)


@pytest.fixture
def neighbour():
    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("setpriv"):
        pytest.skip("needs root, useradd and setpriv to act as a second user")
    n = Neighbour()
    try:
        yield n
    finally:
        n.remove()


def relay_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "SCALABLE_RELAY"}
    env.update(extra)
    return env


def start(*extra, env=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "scalable.cli", "relay", "--allow", "echo", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env or relay_env(),
    )


def served_path(proc: subprocess.Popen) -> str:
    """The socket path a starting relay prints."""
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    assert ready, "the relay printed nothing within 60 s"
    line = proc.stdout.readline()
    assert line.startswith("scalable relay serving "), (
        line,
        proc.poll() is not None and proc.stderr.read(),
    )
    return line.split()[3]


def refused(proc: subprocess.Popen) -> str:
    """The relay must exit 1 with one sentence (no traceback); return that sentence."""
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the relay started instead of refusing: {out}{err}") from None
    err = proc.stderr.read()
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    return err


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(15)


def mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# --- the socket directory and the log --------------------------------------------------------


@pytest.mark.root
def test_a_link_planted_at_the_old_default_directory_is_not_followed(neighbour):
    victim = neighbour.shared / "victim"
    victim.mkdir(mode=0o755)
    os.chmod(victim, 0o755)
    neighbour.plant_link(victim, neighbour.shared / f"scalable-relay-{os.getuid()}")
    proc = start(env=relay_env(XDG_RUNTIME_DIR=str(neighbour.shared)))
    try:
        sock = served_path(proc)
        assert mode(victim) == 0o755 and not list(victim.iterdir()), "the relay followed the link"
        d = os.path.dirname(sock)
        assert os.path.dirname(d) == str(neighbour.shared) and not os.path.islink(d)
        assert mode(d) == 0o700 and os.lstat(d).st_uid == os.getuid()
        assert relay_run_at(sock, ["echo", "mine"]).stdout == "mine\n"
    finally:
        stop(proc)
    assert not os.path.exists(sock)


def relay_run_at(sock, argv):
    before = os.environ.get("SCALABLE_RELAY")
    os.environ["SCALABLE_RELAY"] = sock
    try:
        return relay_run(argv)
    finally:
        if before is None:
            del os.environ["SCALABLE_RELAY"]
        else:
            os.environ["SCALABLE_RELAY"] = before


@pytest.mark.root
def test_a_given_path_through_a_planted_link_is_refused_with_a_sentence(neighbour):
    victim = neighbour.shared / "victim"
    victim.mkdir()
    os.chmod(victim, 0o755)
    link = neighbour.shared / "relay-dir"
    neighbour.plant_link(victim, link)
    err = refused(start("--socket", str(link / "relay.sock")))
    assert f"{link} is a symbolic link" in err and f"uid {neighbour.uid}" in err
    assert mode(victim) == 0o755 and not list(victim.iterdir())
    dangling = neighbour.shared / "dangling"
    neighbour.plant_link(neighbour.shared / "nowhere", dangling)
    err = refused(start("--socket", str(dangling / "relay.sock")))
    assert f"{dangling} is a symbolic link" in err
    assert not (neighbour.shared / "nowhere").exists()


@pytest.mark.root
def test_directories_others_can_write_or_own_are_refused_and_keep_their_mode(neighbour):
    open_dir = neighbour.shared / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o1777)
    err = refused(start("--socket", str(open_dir / "relay.sock")))
    assert "can be written by group or others (mode 1777)" in err
    assert mode(open_dir) == 0o1777, "the relay changed the mode of a directory it did not create"
    theirs = neighbour.shared / "theirs"
    neighbour.run("mkdir", "-m", "700", str(theirs))
    err = refused(start("--socket", str(theirs / "relay.sock")))
    assert f"{theirs} belongs to uid {neighbour.uid}" in err
    # a private directory of its own inside the sticky one is fine, and leaves it 1777
    proc = start("--socket", str(open_dir / "mine" / "relay.sock"))
    try:
        sock = served_path(proc)
        assert mode(open_dir / "mine") == 0o700 and mode(open_dir) == 0o1777
        assert relay_run_at(sock, ["echo", "ok"]).stdout == "ok\n"
    finally:
        stop(proc)


@pytest.mark.root
def test_the_log_is_never_opened_through_a_link_or_in_a_file_of_another(neighbour, tmp_path):
    precious = neighbour.shared / "precious"
    precious.write_text("keep me\n")
    os.chmod(precious, 0o644)
    link = neighbour.shared / "relay.log"
    neighbour.plant_link(precious, link)
    err = refused(start("--socket", str(tmp_path / "r" / "relay.sock"), "--log-file", str(link)))
    assert f"the relay log {link} is a symbolic link" in err
    assert precious.read_text() == "keep me\n" and mode(precious) == 0o644
    theirs = neighbour.shared / "their.log"
    neighbour.run("touch", str(theirs))
    err = refused(start("--socket", str(tmp_path / "r" / "relay.sock"), "--log-file", str(theirs)))
    assert f"belongs to uid {neighbour.uid}" in err
    assert theirs.read_text() == ""


def test_a_log_with_another_name_is_refused_and_left_unchanged(tmp_path):
    # where fs.protected_hardlinks is off, a neighbour can give any file of ours a second name
    # in a directory they write; the relay must not append to, say, ~/.bashrc through it
    precious = tmp_path / "precious"
    precious.write_text("keep me\n")
    os.chmod(precious, 0o600)
    log = tmp_path / "relay.log"
    os.link(precious, log)
    err = refused(start("--socket", str(tmp_path / "r" / "relay.sock"), "--log-file", str(log)))
    assert f"the relay log {log} has 1 other name(s) (hard links)" in err
    assert precious.read_text() == "keep me\n"


def test_the_relay_removes_only_the_socket_it_made(tmp_path):
    first = start("--socket", str(tmp_path / "r" / "relay.sock"))
    sock = served_path(first)
    os.unlink(sock)  # e.g. removed by hand, and a new relay started in its place
    second = start("--socket", sock)
    try:
        assert served_path(second) == sock
        stop(first)
        assert os.path.exists(sock), "the first relay removed the socket of the second"
        assert relay_run_at(sock, ["echo", "second"]).stdout == "second\n"
    finally:
        stop(first)
        stop(second)
    assert not os.path.exists(sock)


# --- the client checks who serves the socket -------------------------------------------------


@pytest.mark.root
def test_a_relay_of_another_uid_gets_nothing_from_the_client(neighbour, tmp_path, monkeypatch):
    fake_dir = neighbour.shared / "fake"
    fake_dir.mkdir()
    os.chown(fake_dir, neighbour.uid, neighbour.gid)
    sock, record = fake_dir / "relay.sock", fake_dir / "record"
    fake = neighbour.start("/usr/bin/python3", "-c", FAKE_RELAY, str(sock), str(record))
    assert select.select([fake.stdout], [], [], 60)[0] and fake.stdout.readline() == "ready\n"
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\necho secret-job-script\n")
    monkeypatch.setenv("SCALABLE_RELAY", str(sock))
    expected = (
        f"the relay socket {sock} is served by uid {neighbour.uid}, not by you (uid {os.getuid()})"
    )

    def sent_per_connection(n):
        return wait_for(
            lambda: record.exists() and len(lines := record.read_text().split()) >= n and lines,
            what=f"{n} connections recorded by the fake relay",
        )

    with pytest.raises(CommandError, match="served by uid") as e:
        relay_run(["sbatch", str(script)])
    assert expected in str(e.value) and "666" not in str(e.value)
    with pytest.raises(CommandError, match="served by uid"):
        asyncio.run(relay_arun(["sbatch", str(script)]))
    shims = tmp_path / "shims"
    write_shims(str(shims), names=["sbatch"], python=sys.executable)
    r = subprocess.run(
        [str(shims / "sbatch"), str(script)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 126 and expected in r.stderr and "666" not in r.stdout
    assert sent_per_connection(3) == ["0", "0", "0"], "the client sent something to another uid"


# --- load: threads, deadlines ----------------------------------------------------------------


def request_threads() -> int:
    return sum(t.name == "relay-request" for t in threading.enumerate())


@contextlib.contextmanager
def relay_in_process(tmp_path, monkeypatch):
    # threads of an earlier in-process relay end soon after it closes; counts start from none
    wait_for(lambda: request_threads() == 0, what="request threads of earlier relays to end")
    server = RelayServer(str(tmp_path / "r" / "relay.sock"), allowlist=["echo"])
    asyncio.run(server.start())
    monkeypatch.setenv("SCALABLE_RELAY", server.socket_path)
    try:
        yield server.socket_path
    finally:
        asyncio.run(server.close())


def raw_reply(sock_path, payload: bytes) -> dict:
    """Send ``payload`` as a client that checks nothing; return the reply's header. (Read by
    length: a relay that closes without reading what was sent resets the connection after its
    reply, so reading on to end-of-file would fail.)"""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(sock_path)
        try:
            s.sendall(payload)
        except BrokenPipeError:
            pass  # refused before reading (busy): the reply is waiting
        (n,) = struct.unpack(">I", protocol.recv_exactly(s, 4))
        return protocol.decode_header(protocol.recv_exactly(s, n))


def test_a_thread_that_cannot_start_answers_busy_and_the_relay_keeps_serving(tmp_path, monkeypatch):
    real_start = threading.Thread.start

    def no_request_threads(self):
        if self.name == "relay-request":
            raise RuntimeError("can't start new thread")
        return real_start(self)

    request = protocol.encode_header(protocol.request_header(["echo", "hi"], "/", None, 0))
    with relay_in_process(tmp_path, monkeypatch) as sock:
        threading.Thread.start = no_request_threads
        try:
            header = raw_reply(sock, request)
            assert header["retry"] and "too busy" in header["error"], header
            with (
                dask.config.set({"scalable.relay.connect-timeout": 1}),
                pytest.raises(CommandError, match="too busy"),
            ):
                relay_run(["echo", "hi"])
        finally:
            threading.Thread.start = real_start
        assert relay_run(["echo", "back"]).stdout == "back\n"
        assert "BUSY" in (Path(sock).parent / "relay.log").read_text()


def silent_clients(sock, n) -> list[socket.socket]:
    """``n`` clients that connect and say nothing: each holds a request thread while it is read."""
    clients = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(sock)
        s.sendall(b"\x00\x00")
        clients.append(s)
    return clients


def test_request_threads_are_bounded_and_past_the_bound_clients_are_told_to_retry(
    tmp_path, monkeypatch
):
    with (
        dask.config.set({"scalable.relay.max-threads": 8}),
        relay_in_process(tmp_path, monkeypatch) as sock,
    ):
        silent = silent_clients(sock, 12)
        try:
            for s in silent[8:]:  # past the bound: told at once to retry
                s.settimeout(30)
                (n,) = struct.unpack(">I", protocol.recv_exactly(s, 4))
                assert protocol.decode_header(protocol.recv_exactly(s, n))["retry"]
            assert request_threads() == 8
        finally:
            for s in silent:
                s.close()
        # and a burst larger than the bound is served in full: busy clients retry by themselves
        results = {}
        burst = [
            threading.Thread(
                target=lambda i=i: results.update({i: relay_run(["echo", str(i)]).stdout})
            )
            for i in range(30)
        ]
        for t in burst:
            t.start()
        for t in burst:
            t.join(120)
        assert results == {i: f"{i}\n" for i in range(30)}
        assert "BUSY" in (Path(sock).parent / "relay.log").read_text()


def test_idle_request_threads_end_after_a_burst(tmp_path, monkeypatch):
    with (
        dask.config.set({"scalable.relay.idle-timeout": 0.5}),
        relay_in_process(tmp_path, monkeypatch) as sock,
    ):
        silent = silent_clients(sock, 40)
        try:
            wait_for(lambda: request_threads() >= 40, what="a thread for each of 40 clients")
        finally:
            for s in silent:
                s.close()
        wait_for(lambda: request_threads() <= 2, what="idle request threads to end (2 stay warm)")
        assert relay_run(["echo", "after"]).stdout == "after\n"


def test_a_relay_that_never_answers_is_an_error_not_a_hang(tmp_path, monkeypatch):
    d = tmp_path / "silent"
    d.mkdir(mode=0o700)
    sock = str(d / "relay.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(sock)
    listener.listen(0)  # accepts nothing, ever
    monkeypatch.setenv("SCALABLE_RELAY", sock)
    results = {}

    def call(key, fn):
        try:
            results[key] = fn()
        except CommandError as e:
            results[key] = e

    try:
        with dask.config.set(
            {"scalable.relay.reply-timeout": 2, "scalable.relay.connect-timeout": 2}
        ):
            calls = [
                threading.Thread(
                    target=call, args=("sync", lambda: relay_run(["squeue"])), daemon=True
                ),
                threading.Thread(
                    target=call,
                    args=("async", lambda: asyncio.run(relay_arun(["squeue"]))),
                    daemon=True,
                ),
            ]
            for t in calls:  # the backlog holds the first connection; the second is never taken
                t.start()
            for t in calls:
                t.join(60)
            assert not any(t.is_alive() for t in calls), "the client waited forever"
    finally:
        listener.close()
    for key in ("sync", "async"):
        assert isinstance(results[key], CommandError), results[key]
        assert "did not answer within 2 s" in str(results[key]) or "cannot reach" in str(
            results[key]
        )


# --- input the relay cannot log or parse -----------------------------------------------------


def test_argv_that_is_not_text_is_refused_and_every_command_is_logged(tmp_path, monkeypatch):
    with relay_in_process(tmp_path, monkeypatch) as sock:
        log = Path(sock).parent / "relay.log"
        with pytest.raises(CommandError, match="not valid UTF-8"):
            relay_run(["echo", "caf\udce9"])
        shims = tmp_path / "shims"
        write_shims(str(shims), names=["echo"], python=sys.executable)
        r = subprocess.run(
            [str(shims / "echo").encode(), b"caf\xe9"], check=False, capture_output=True, timeout=60
        )
        assert r.returncode == 126 and b"not valid UTF-8" in r.stderr and r.stdout == b"", r
        odd = "na\u00efve \u2603 \u2028 \x1b[0m tab\there"
        assert relay_run(["echo", odd]).stdout == odd + "\n"
        wait_for(
            lambda: log.read_text().count("caf\\udce9") >= 2 and "\u2603" in log.read_text(),
            what="every request in the relay log",
        )


def test_json_nested_too_deeply_gets_a_sentence(tmp_path, monkeypatch):
    with relay_in_process(tmp_path, monkeypatch) as sock:
        for payload in (
            b"[" * 200_000 + b"]" * 200_000,
            b'{"v": 1, "argv": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",
        ):
            header = raw_reply(sock, struct.pack(">I", len(payload)) + payload)
            assert "nested too deeply" in header["error"], header
        assert relay_run(["echo", "fine"]).stdout == "fine\n"
