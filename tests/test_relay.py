"""The host command relay on a real Unix socket, with real processes: no mocks.

The relays here allow harmless programs (echo, cat, ls...) in place of Slurm's, so these tests
need no Slurm; tests/test_relay_slurm.py drives the real test Slurm through the relay.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import dask
import pytest

from scalable.relay import protocol
from scalable.relay.client import relay_arun, relay_run
from scalable.relay.server import RelayError, clear_stale_socket
from scalable.relay.shim import is_shim, sbatch_stdin, write_shims
from scalable.runner import CommandError, run
from waiting import wait_for

ALLOW = ("echo", "cat", "ls", "sleep", "head", "pwd", "true")


def start_relay(directory, *allow, extra=()):
    """Start ``scalable relay`` as its own process; return (process, socket path)."""
    sock = os.path.join(directory, "relay", "relay.sock")
    argv = [sys.executable, "-m", "scalable.cli", "relay", "--socket", sock, *extra]
    for name in allow:
        argv += ["--allow", name]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while not _answers(sock):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"relay did not start: {proc.communicate()}")
        time.sleep(0.02)
    return proc, sock


def _answers(sock) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(sock)
            return True
        except OSError:
            return False


def stop(proc):
    if proc.poll() is None:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def relay_proc(tmp_path_factory):
    proc, sock = start_relay(tmp_path_factory.mktemp("relay"), *ALLOW)
    yield proc, sock
    stop(proc)
    assert proc.returncode == 0
    assert not os.path.exists(sock), "the relay must remove its socket when stopped"


@pytest.fixture
def relay(relay_proc):
    return relay_proc[1]


@pytest.fixture
def use_relay(relay, monkeypatch):
    monkeypatch.setenv("SCALABLE_RELAY", relay)
    return relay


def log_of(sock) -> str:
    return Path(sock).with_name("relay.log").read_text()


def test_socket_is_private(relay):
    d = os.path.dirname(relay)
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(relay).st_mode) == 0o600
    assert stat.S_ISSOCK(os.stat(relay).st_mode)
    assert stat.S_IMODE(os.stat(os.path.join(d, "relay.log")).st_mode) == 0o600


def test_relay_listens_on_no_network_address(relay_proc):
    pid = relay_proc[0].pid
    inodes = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    inodes = {i[8:-1] for i in inodes if i.startswith("socket:[")}
    for table in ("tcp", "tcp6", "udp", "udp6"):
        rows = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        assert not inodes & {r.split()[9] for r in rows}, f"relay has a {table} socket"
    unix = {r.split()[6] for r in Path("/proc/net/unix").read_text().splitlines()[1:]}
    assert inodes & unix, "the relay's own Unix socket should have been found"


def test_round_trip_stdout_stderr_exit_code(use_relay):
    r = relay_run(["echo", "hello", "a|b", "$(id)"])
    assert (r.returncode, r.stdout, r.stderr) == (0, "hello a|b $(id)\n", "")
    r = relay_run(["ls", "/no/such/dir"])
    assert r.returncode == 2 and "/no/such/dir" in r.stderr and r.stdout == ""
    assert r.argv == ("ls", "/no/such/dir")
    assert relay_run(["cat"], input="piped text").stdout == "piped text"


def test_runner_uses_the_relay_for_missing_programs(use_relay, monkeypatch, tmp_path):
    # With an empty PATH nothing is local, so the one door to the command line must relay.
    monkeypatch.setenv("PATH", str(tmp_path))
    assert run(["echo", "via", "relay"]).stdout == "via relay\n"
    with pytest.raises(CommandError) as e:
        run(["ls", "/no/such/dir"])
    assert e.value.returncode == 2 and "/no/such/dir" in str(e.value)
    assert run(["ls", "/no/such/dir"], check=False).returncode == 2


@pytest.mark.parametrize(
    "argv, words",
    [
        (["rm", "-rf", "/"], "not allowed through the relay"),
        (["/bin/echo", "x"], "bare name"),
        (["../bin/echo", "x"], "bare name"),
        (["echo;id"], "shell syntax"),
        (["echo hi"], "shell syntax"),
        (["$(id)"], "shell syntax"),
        (["echo|cat"], "shell syntax"),
    ],
)
def test_refusals_are_clear(use_relay, argv, words):
    with pytest.raises(CommandError) as e:
        relay_run(argv)
    assert words in str(e.value) and "refused by the host relay" in str(e.value)
    assert "REFUSED" in log_of(use_relay)


def test_runs_in_callers_directory(use_relay, tmp_path):
    assert relay_run(["pwd"], cwd=str(tmp_path)).stdout.strip() == str(tmp_path)
    with pytest.raises(CommandError, match="does not exist on the host"):
        relay_run(["pwd"], cwd=str(tmp_path / "missing"))


def test_megabytes_of_output_and_input_arrive_intact(use_relay, tmp_path):
    data = os.urandom(6 << 20)
    blob = tmp_path / "blob"
    blob.write_bytes(data)
    header, out, err = protocol.call(use_relay, ["cat", str(blob)])
    assert header["returncode"] == 0 and out == data and err == b""
    text = data.hex()[: 5 << 20]
    assert relay_run(["cat"], input=text).stdout == text


def test_fifty_concurrent_requests_all_answer_unmixed(use_relay):
    async def burst():
        return await asyncio.gather(*(relay_arun(["echo", f"request-{i}"]) for i in range(50)))

    results = asyncio.run(burst())
    assert [r.stdout for r in results] == [f"request-{i}\n" for i in range(50)]


def test_slow_command_does_not_delay_a_fast_one(use_relay, tmp_path):
    # the slow command reads a FIFO: it runs until the test writes to it, however slow the machine
    gate = tmp_path / "gate"
    os.mkfifo(gate)
    result = {}
    slow = threading.Thread(target=lambda: result.update(r=relay_run(["cat", str(gate)])))
    slow.start()
    wait_for(lambda: _procs_with(f"cat {gate}"), 60, "the slow command to start")
    assert relay_run(["echo", "fast"]).stdout == "fast\n"
    # ordering, not timing: the fast answer came while the slow command still ran
    assert slow.is_alive(), "the fast command had to wait for the slow one"
    with open(gate, "w") as f:
        f.write("released\n")
    slow.join(60)
    assert result["r"].stdout == "released\n"


def test_timeout_kills_the_command(use_relay):
    t0 = time.monotonic()
    with pytest.raises(CommandError, match="timed out"):
        relay_run(["sleep", "303.25"], timeout=0.5)
    assert time.monotonic() - t0 < 120  # far below the 303 s the command would have taken
    # (a duration no other test on a shared machine uses: processes are found by command line)
    wait_for(lambda: not _procs_with("sleep 303.25"), 60, "the timed-out command to be killed")
    # the relay replies first and then logs, so the line may come a moment after the answer
    wait_for(lambda: "TIMEOUT" in log_of(use_relay), 30, "the timeout in the request log")


def _procs_with(needle: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if (
                Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
                == needle.encode()
            ):
                found.append(int(pid))
        except OSError:
            pass
    return found


def test_killed_client_leaves_the_server_serving(use_relay):
    code = "import sys; from scalable.relay.client import relay_run; relay_run(['sleep', '41.5'])"
    client = subprocess.Popen(
        [sys.executable, "-c", code], env={**os.environ, "SCALABLE_RELAY": use_relay}
    )
    deadline = time.monotonic() + 20
    while not _procs_with("sleep 41.5"):
        assert time.monotonic() < deadline, "the relayed command never started"
        time.sleep(0.05)
    client.kill()
    client.wait()
    assert relay_run(["echo", "still", "here"]).stdout == "still here\n"
    deadline = time.monotonic() + 30
    while _procs_with("sleep 41.5") or "client gone" not in log_of(use_relay):
        # a command whose caller is gone is stopped, and the log says so
        assert time.monotonic() < deadline, "the relay left the orphaned command running"
        time.sleep(0.05)


def _raw(sock_path, payload: bytes, close_write=True) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(sock_path)
        s.sendall(payload)
        if close_write:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _error_of(reply: bytes) -> str:
    (n,) = struct.unpack(">I", reply[:4])
    return protocol.decode_header(reply[4 : 4 + n])["error"]


def test_bad_requests_never_break_the_server(use_relay):
    good = protocol.request_header(["echo"], "/", None, 0)
    assert "not UTF-8 JSON" in _error_of(_raw(use_relay, struct.pack(">I", 5) + b"\xff{{{{"))
    assert "exceeds" in _error_of(_raw(use_relay, struct.pack(">I", 1 << 30)))
    assert "unknown request field" in _error_of(
        _raw(use_relay, protocol.encode_header({**good, "shell": True}))
    )
    assert "missing" in _error_of(
        _raw(use_relay, protocol.encode_header({"v": 1, "argv": ["echo"]}))
    )
    assert "wrong type" in _error_of(
        _raw(use_relay, protocol.encode_header({**good, "argv": "echo hi"}))
    )
    assert "NUL" in _error_of(
        _raw(use_relay, protocol.encode_header({**good, "argv": ["echo", "a\0b"]}))
    )
    for bad in (float("nan"), -1, 0):
        assert "timeout must be" in _error_of(
            _raw(use_relay, protocol.encode_header({**good, "timeout": bad}))
        )
    # Clients that hang up before reading their refusal harm nothing.
    for _ in range(20):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(use_relay)
            s.sendall(protocol.encode_header({**good, "argv": ["rm"]}))
    assert "stdin of" in _error_of(
        _raw(use_relay, protocol.encode_header({**good, "stdin": 1 << 40}))
    )
    # A truncated request (promises 100 bytes of stdin, sends 3, hangs up) gets no reply.
    assert _raw(use_relay, protocol.encode_header({**good, "stdin": 100}) + b"abc") == b""
    # Clients that connect and say nothing, more of them than command slots, hold nothing up.
    idle = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(40)]
    for s in idle:
        s.connect(use_relay)
        s.sendall(b"\x00\x00")
    try:
        t0 = time.monotonic()
        assert relay_run(["echo", "ok"]).stdout == "ok\n"
        assert time.monotonic() - t0 < 10  # not the 30 s the idle ones may keep their thread
    finally:
        for s in idle:
            s.close()
    assert relay_run(["echo", "ok"]).stdout == "ok\n"


def _nobody_can_run(python_dir: str, sock: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            "setpriv",
            "--reuid",
            "nobody",
            "--regid",
            "nogroup",
            "--clear-groups",
            "/usr/bin/python3",
            os.path.join(python_dir, "echo"),
            "from",
            "nobody",
        ],
        env={"SCALABLE_RELAY": sock, "PATH": "/usr/bin:/bin"},
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
    )


@pytest.mark.root
@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv"
)
def test_other_uid_is_refused():
    top = tempfile.mkdtemp(prefix="scalable-relay-uid-")
    try:
        os.chmod(top, 0o755)
        shims = os.path.join(top, "shims")
        write_shims(shims, names=["echo"], python="/usr/bin/python3")
        for dirpath, _dirs, _files in os.walk(shims):
            os.chmod(dirpath, 0o755)
        proc, sock = start_relay(top, "echo")
        try:
            # The 0700 directory alone keeps other users out...
            r = _nobody_can_run(shims, sock)
            assert r.returncode == 127 and "Permission denied" in r.stderr
            # ...should it be opened up by mistake, the client sees the relay is not its own...
            os.chmod(os.path.dirname(sock), 0o711)
            os.chmod(sock, 0o666)
            r = _nobody_can_run(shims, sock)
            assert r.returncode == 126, r
            assert f"the relay socket {sock} is served by uid 0, not by you (uid 65534)" in r.stderr
            assert "from nobody" not in r.stdout
            # ...and a client that does not check is refused by the relay's SO_PEERCRED check.
            raw = (
                "import socket, struct, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
                "s.sendall(bytes.fromhex(sys.argv[2])); s.shutdown(socket.SHUT_WR); "
                "sys.stdout.buffer.write(s.recv(65536))"
            )
            request = protocol.encode_header(
                protocol.request_header(["echo", "from nobody"], "/", None, 0)
            )
            r = subprocess.run(
                [
                    "setpriv",
                    "--reuid",
                    "nobody",
                    "--regid",
                    "nogroup",
                    "--clear-groups",
                    "/usr/bin/python3",
                    "-c",
                    raw,
                    sock,
                    request.hex(),
                ],
                check=False,
                capture_output=True,
                timeout=30,
                cwd="/",
            )
            assert "serves only uid 0; uid 65534 is refused" in _error_of(r.stdout), r
            assert b"from nobody" not in r.stdout
        finally:
            stop(proc)
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_shims_forward_argv_stdout_stderr_exit_code_cwd(use_relay, tmp_path):
    shims = tmp_path / "shims"
    write_shims(str(shims), names=["echo", "ls", "pwd"], python=sys.executable)
    env = {**os.environ, "PATH": f"{shims}:/usr/bin:/bin"}
    r = subprocess.run(
        [str(shims / "echo"), "a b", "c|d"], env=env, check=False, capture_output=True, text=True
    )
    assert (r.returncode, r.stdout) == (0, "a b c|d\n")
    r = subprocess.run(
        [str(shims / "ls"), "/no/such"], env=env, check=False, capture_output=True, text=True
    )
    assert r.returncode == 2 and "/no/such" in r.stderr
    r = subprocess.run(
        [str(shims / "pwd")], env=env, check=False, capture_output=True, text=True, cwd=tmp_path
    )
    assert r.stdout.strip() == str(tmp_path)
    del env["SCALABLE_RELAY"]
    r = subprocess.run([str(shims / "echo")], env=env, check=False, capture_output=True, text=True)
    assert r.returncode == 127 and "SCALABLE_RELAY is not set" in r.stderr
    assert is_shim(str(shims / "echo")) and not is_shim(shutil.which("echo"))


def test_shims_command_writes_every_slurm_shim(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "scalable.cli", "relay", "shims", str(tmp_path / "bin")],
        check=False,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    for name in ("sbatch", "squeue", "scancel", "sinfo", "scontrol", "sacct"):
        assert os.access(tmp_path / "bin" / name, os.X_OK)
    assert (tmp_path / "bin" / "sbatch").read_text().startswith("#!/usr/bin/env python3\n")


def test_shims_start_without_importing_dask(tmp_path):
    shims = tmp_path / "shims"
    write_shims(str(shims), python=sys.executable)
    code = (
        f"import sys, runpy; sys.argv = ['{shims}/squeue']; "
        f"sys.path.insert(0, '{shims}')\n"
        "try:\n runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit: pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'scalable', 'distributed')))"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "SCALABLE_RELAY"},
    )
    assert r.stdout.strip() == "[]", r


def test_sbatch_script_goes_on_stdin(tmp_path):
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\n#SBATCH -J x\nhostname\n")
    s = str(script)
    body = script.read_bytes()
    assert sbatch_stdin(["sbatch", s]) == (["sbatch"], body)
    assert sbatch_stdin(["sbatch", "--parsable", "-p", "debug", "-Q", s]) == (
        ["sbatch", "--parsable", "-p", "debug", "-Q"],
        body,
    )
    assert sbatch_stdin(["sbatch", "--array=0-3", "-pdebug", s]) == (
        ["sbatch", "--array=0-3", "-pdebug"],
        body,
    )
    # An option's value that happens to be a file is not the script; nor is a missing file.
    assert sbatch_stdin(["sbatch", "-o", s]) == (["sbatch", "-o", s], b"")
    assert sbatch_stdin(["sbatch", str(tmp_path / "nope.sh")])[1] == b""
    # Script arguments cannot travel with a script on stdin: leave the command alone.
    assert sbatch_stdin(["sbatch", s, "arg"]) == (["sbatch", s, "arg"], b"")
    assert sbatch_stdin(["sbatch", "--wrap", "hostname"]) == (["sbatch", "--wrap", "hostname"], b"")


def test_stale_socket_is_replaced_and_live_one_refused(tmp_path):
    d = tmp_path / "relay"
    d.mkdir(mode=0o700)
    sock = str(d / "relay.sock")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(sock)  # a crashed server leaves its socket file behind
    dead.close()
    proc, sock2 = start_relay(str(tmp_path), "echo")
    try:
        assert sock2 == sock
        assert (
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "scalable.cli",
                    "relay",
                    "run",
                    "--socket",
                    sock,
                    "--",
                    "echo",
                    "hi",
                ],
                check=False,
                capture_output=True,
                text=True,
            ).stdout
            == "hi\n"
        )
        with pytest.raises(RelayError, match="already serving"):
            clear_stale_socket(sock)
        second = subprocess.run(
            [sys.executable, "-m", "scalable.cli", "relay", "--socket", sock],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 1 and "already serving" in second.stderr
    finally:
        stop(proc)
    (d / "file").write_text("x")
    with pytest.raises(RelayError, match="is not a socket"):
        clear_stale_socket(str(d / "file"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_relay_and_removes_socket(tmp_path, sig):
    proc, sock = start_relay(str(tmp_path), "echo")
    proc.send_signal(sig)
    assert proc.wait(10) == 0
    assert not os.path.exists(sock)


def test_unreachable_relay_is_a_clear_error(tmp_path, monkeypatch):
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(tmp_path / "dead.sock"))  # a crashed relay's socket: refused at once
    dead.close()
    for path in (tmp_path / "gone" / "relay.sock", tmp_path / "dead.sock"):
        monkeypatch.setenv("SCALABLE_RELAY", str(path))
        t0 = time.monotonic()
        with pytest.raises(CommandError, match="cannot reach the host relay"):
            relay_run(["squeue"])
        with pytest.raises(CommandError, match="cannot reach the host relay"):
            asyncio.run(relay_arun(["squeue"]))
        # refused at once, not after the 10 s a starting relay is waited for (twice here)
        assert time.monotonic() - t0 < 10


def test_client_waits_for_a_relay_that_is_starting(tmp_path, monkeypatch):
    # The kernel launcher spawns the kernel first and binds its relay's socket a moment later.
    (tmp_path / "relay").mkdir(mode=0o700)
    monkeypatch.setenv("SCALABLE_RELAY", str(tmp_path / "relay" / "relay.sock"))
    # however long the relay takes to start on a loaded machine, the client is still waiting
    monkeypatch.setattr(protocol, "READY_WAIT", 300.0)
    monkeypatch.setitem(dask.config.config["scalable"]["relay"], "connect-timeout", 300)
    tried = threading.Event()
    retryable = protocol.retryable

    def spy(*args):
        tried.set()  # the client found no socket yet and decides whether to wait
        return retryable(*args)

    monkeypatch.setattr(protocol, "retryable", spy)
    result = {}
    t = threading.Thread(target=lambda: result.update(r=relay_run(["echo", "waited"])))
    t.start()
    assert tried.wait(60), "the client never tried to connect"
    proc, _ = start_relay(str(tmp_path), "echo")
    try:
        t.join(120)
        assert not t.is_alive()
        assert result["r"].stdout == "waited\n"
        assert asyncio.run(relay_arun(["echo", "async"])).stdout == "async\n"
    finally:
        stop(proc)


def test_allowlist_and_limits_come_from_config(tmp_path):
    import dask

    from scalable.relay.server import DEFAULT_ALLOWLIST, RelayServer

    sock = str(tmp_path / "r" / "relay.sock")
    assert RelayServer(sock).allowlist == frozenset(DEFAULT_ALLOWLIST)
    with dask.config.set(
        {"scalable.relay.allowlist": ["squeue", "sinfo"], "scalable.relay.timeout": 5}
    ):
        server = RelayServer(sock)
        assert (server.allowlist, server.timeout) == (frozenset({"squeue", "sinfo"}), 5.0)
        assert RelayServer(sock, allowlist=["sacct"], timeout=9).allowlist == frozenset({"sacct"})
    with pytest.raises(RelayError, match="not bare program names"):
        RelayServer(sock, allowlist=["/bin/sh"])


def test_command_that_closes_its_output_still_meets_the_timeout(tmp_path, monkeypatch):
    # a program that shuts its stdout/stderr and keeps running: the pipes say nothing about it
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "quiet-sleep").write_text("#!/bin/sh\nexec >&- 2>&-\nexec sleep 301.5\n")
    (bin_dir / "quiet-sleep").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    proc, sock = start_relay(tmp_path, "quiet-sleep")
    try:
        monkeypatch.setenv("SCALABLE_RELAY", sock)
        t0 = time.monotonic()
        with pytest.raises(CommandError, match="timed out"):
            relay_run(["quiet-sleep"], timeout=1)
        assert time.monotonic() - t0 < 120  # far below the 301.5 s the command would take
        # the relay answers first and reaps the killed command a moment later
        wait_for(lambda: not _procs_with("sleep 301.5"), 60, "the timed-out command to be killed")
    finally:
        stop(proc)


def test_stopping_the_relay_starts_nothing_more_and_exits_at_once(tmp_path, monkeypatch):
    # one command slot: a slow command holds it, a second request waits for it, a third
    # client says nothing; SIGTERM must stop the first, never start the second, and exit
    monkeypatch.setenv("DASK_SCALABLE__RELAY__MAX_CONCURRENT", "1")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "mark").write_text('#!/bin/sh\ntouch "$1"\n')
    (bin_dir / "mark").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    proc, sock = start_relay(tmp_path, "sleep", "mark")
    monkeypatch.setenv("SCALABLE_RELAY", sock)
    marker = tmp_path / "must-not-exist"
    results = {}

    def call(key, argv):
        try:
            results[key] = relay_run(argv)
        except CommandError as e:
            results[key] = e

    slow = threading.Thread(target=call, args=("slow", ["sleep", "42.5"]))
    slow.start()
    deadline = time.monotonic() + 20
    while not _procs_with("sleep 42.5"):
        assert time.monotonic() < deadline, "the relayed command never started"
        time.sleep(0.05)
    queued = threading.Thread(target=call, args=("queued", ["mark", str(marker)]))
    queued.start()
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.connect(sock)
    time.sleep(0.5)  # the second request is read and waits for the slot
    t0 = time.monotonic()
    proc.terminate()
    proc.wait(60)
    assert time.monotonic() - t0 < 30, "the relay waited for its clients before exiting"
    slow.join(60)
    queued.join(60)
    idle.close()
    wait_for(lambda: not _procs_with("sleep 42.5"), 30, "the running command to be stopped")
    assert isinstance(results["slow"], CommandError) and "stopped" in str(results["slow"])
    # refused ("stopping") if the relay had read it, else it found the relay gone: never run
    assert isinstance(results["queued"], CommandError), results["queued"]
    assert not marker.exists(), "a command started after the relay was told to stop"
