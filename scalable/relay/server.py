"""The host side of the relay: runs allowlisted Slurm commands for the container.

The kernel and the Dask scheduler run inside the scalable image, where Slurm's commands and
munge are absent. :class:`RelayServer` listens on a Unix socket that only its owner can reach
(a 0700 directory, a 0600 socket, and an ``SO_PEERCRED`` uid check), and runs one allowlisted
program per request with an argv list -- never a shell, never a network address. Requests are
served concurrently on one asyncio loop, so a pending ``salloc``-like command never delays a
``squeue``.

Examples
--------
From a shell on the host::

    $ scalable relay --socket /tmp/me-relay/relay.sock
    $ SCALABLE_RELAY=/tmp/me-relay/relay.sock python -c \\
        "from scalable.relay.client import relay_run; print(relay_run(['squeue']).stdout)"
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import stat
import struct
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

from .protocol import (
    MAX_HEADER,
    ProtocolError,
    check_request,
    decode_header,
    encode_header,
    reply_header,
)

logger = logging.getLogger(__name__)

DEFAULT_ALLOWLIST = ("sbatch", "squeue", "scancel", "sinfo", "scontrol", "sacct")
#: a program name the relay will even consider: a bare name, no path, no shell syntax
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_SHELLISH = set(" \t\n;&|<>()$`\\\"'*?[]{}~#!=")
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
#: seconds a client has to send its whole request; a stalled one is dropped
READ_TIMEOUT = 30.0


class RelayError(RuntimeError):
    """The relay cannot start (e.g. another relay already serves the socket)."""


class Refused(Exception):
    """A request the relay will not run; the message is a sentence for the user."""

    def __init__(self, message: str, returncode: int = 126):
        super().__init__(message)
        self.returncode = returncode


def prepare_socket_dir(path: str) -> None:
    """Create ``path`` as a 0700 directory, or check an existing one is ours and private."""
    try:
        os.makedirs(path, mode=0o700)
    except FileExistsError:
        pass
    st = os.stat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise RelayError(f"{path} is not a directory; choose another socket path")
    if st.st_uid != os.getuid():
        raise RelayError(f"{path} belongs to uid {st.st_uid}; choose a socket path in a directory of yours")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)  # only the owner may reach the socket


def clear_stale_socket(path: str) -> None:
    """Remove ``path`` if it is a socket nobody serves; refuse if a live relay answers."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise RelayError(f"{path} exists and is not a socket; remove it or choose another socket path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as e:
        if e.errno in (errno.ECONNREFUSED, errno.ENOENT):
            logger.info("removing stale relay socket %s", path)
            os.unlink(path)
            return
        raise
    else:
        raise RelayError(f"a relay is already serving {path}; stop it first or choose another socket path")
    finally:
        probe.close()


class RelayServer:
    """Serve allowlisted host commands on a private Unix socket.

    Parameters
    ----------
    socket_path : str
        Where to listen. Its directory is created 0700 if needed. Keep it short: Unix socket
        paths are limited to 107 bytes.
    allowlist : iterable of str, optional
        Program names that may run; default ``scalable.relay.allowlist`` from config.
    timeout : float, optional
        Longest a command may run, in seconds (clients may ask for less).
    log_file : str, optional
        Request log (time, uid/pid, argv, cwd, exit code, duration); default ``relay.log``
        beside the socket.
    max_input : int, optional
        Largest stdin accepted, in bytes.
    max_concurrent : int, optional
        Commands running at once; more requests wait their turn.

    Examples
    --------
    >>> async def main():                                              # doctest: +SKIP
    ...     server = RelayServer("/tmp/my-relay/relay.sock", allowlist=["squeue"])
    ...     await server.start()
    ...     await server.serve_forever()
    """

    def __init__(
        self,
        socket_path: str,
        *,
        allowlist: Iterable[str] | None = None,
        timeout: float | None = None,
        log_file: str | None = None,
        max_input: int | None = None,
        max_concurrent: int | None = None,
    ):
        from .. import config

        self.socket_path = os.path.abspath(socket_path)
        self.allowlist = frozenset(config.get("relay.allowlist", allowlist, DEFAULT_ALLOWLIST))
        self.timeout = float(config.get("relay.timeout", timeout, 600))
        self.max_input = int(config.get("relay.max-input", max_input, 64 << 20))
        self.max_concurrent = int(config.get("relay.max-concurrent", max_concurrent, 32))
        self.log_file = config.get("relay.log-file", log_file) or os.path.join(
            os.path.dirname(self.socket_path), "relay.log"
        )
        bad = sorted(n for n in self.allowlist if not _NAME.match(n))
        if bad:
            raise RelayError(f"relay allowlist entries {bad} are not bare program names; list names like 'squeue'")
        self._server: asyncio.AbstractServer | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._running: list[dict] = []  # commands in flight, stopped by close()
        self._programs: dict[str, str | None] = {}  # name -> path on the host PATH
        self._uid = os.getuid()
        self._log = logging.getLogger(__name__)  # replaced by the request log in start()

    def _request_logger(self) -> logging.Logger:
        log = logging.getLogger(f"scalable.relay.requests.{id(self)}")
        log.propagate = False
        log.setLevel(logging.INFO)
        handler = logging.FileHandler(self.log_file)
        os.chmod(self.log_file, 0o600)  # argv may name private paths
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(handler)
        return log

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the socket (replacing a stale one) and start accepting requests."""
        if len(os.fsencode(self.socket_path)) > 107:
            raise RelayError(f"socket path {self.socket_path} is longer than 107 bytes; choose a shorter one")
        prepare_socket_dir(os.path.dirname(self.socket_path))
        clear_stale_socket(self.socket_path)
        self._log = self._request_logger()
        self._pool = ThreadPoolExecutor(self.max_concurrent, thread_name_prefix="relay-command")
        old = os.umask(0o177)  # the socket is born 0600: no window where others could connect
        try:
            self._server = await asyncio.start_unix_server(self._handle, path=self.socket_path)
        finally:
            os.umask(old)
        os.chmod(self.socket_path, 0o600)
        self._log.info("relay started pid=%d socket=%s allowlist=%s", os.getpid(), self.socket_path,
                       ",".join(sorted(self.allowlist)))

    async def serve_forever(self) -> None:
        assert self._server is not None, "call start() first"
        try:
            await self._server.serve_forever()
        except asyncio.CancelledError:
            pass

    async def close(self) -> None:
        """Stop accepting requests and remove the socket."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for state in list(self._running):  # nobody will read their output any more
            state["gone"] = True
            if state["proc"] is not None:
                _kill_group(state["proc"].pid)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        try:
            os.unlink(self.socket_path)
        except FileNotFoundError:
            pass
        self._log.info("relay stopped")
        for h in list(self._log.handlers):
            h.close()
            self._log.removeHandler(h)

    # --- one request --------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pid = uid = -1
        argv: list[str] = []
        t0 = time.monotonic()
        try:
            sock = writer.get_extra_info("socket")
            pid, uid, _gid = _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))
            if uid != self._uid:
                raise Refused(f"the relay serves only uid {self._uid}; uid {uid} is refused")
            header, stdin = await asyncio.wait_for(self._read_request(reader), READ_TIMEOUT)
            argv = header["argv"]
            program = self._resolve(argv[0])
            cwd = header["cwd"]
            if not os.path.isabs(cwd) or not os.path.isdir(cwd):
                raise Refused(
                    f"the working directory {cwd} does not exist on the host; run from a directory "
                    f"bound at the same path inside and outside the image (e.g. the work directory)"
                )
            timeout = self.timeout if header["timeout"] is None else min(float(header["timeout"]), self.timeout)
            rc, out, err, timed_out = await self._run(program, argv, stdin, cwd, timeout, reader)
            if rc is None:  # the client went away; the command was stopped
                self._log.info("uid=%d pid=%d client gone, command killed after %.3fs cwd=%s argv=%s",
                               uid, pid, time.monotonic() - t0, cwd, shlex.join(argv))
                return
            self._log.info("uid=%d pid=%d rc=%d%s %.3fs cwd=%s argv=%s", uid, pid, rc,
                           " TIMEOUT" if timed_out else "", time.monotonic() - t0, cwd, shlex.join(argv))
            await self._reply(writer, reply_header(rc, out, err, timed_out=timed_out), out, err)
        except Refused as e:
            self._log.info("uid=%d pid=%d REFUSED %s argv=%s", uid, pid, e, shlex.join(argv))
            await self._reply(writer, reply_header(e.returncode, b"", b"", error=str(e)), b"", b"")
        except ProtocolError as e:
            self._log.info("uid=%d pid=%d BAD REQUEST %s", uid, pid, e)
            await self._reply(writer, reply_header(126, b"", b"", error=f"bad relay request: {e}"), b"", b"")
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, ConnectionError) as e:
            self._log.info("uid=%d pid=%d dropped: %s", uid, pid, type(e).__name__)
        except Exception:  # one bad request must never take the relay down
            logger.exception("relay request failed")
            self._log.exception("uid=%d pid=%d internal error argv=%s", uid, pid, shlex.join(argv))
        finally:
            writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[dict, bytes]:
        (size,) = struct.unpack(">I", await reader.readexactly(4))
        if size > MAX_HEADER:
            raise ProtocolError(f"header of {size} bytes exceeds {MAX_HEADER}")
        header = decode_header(await reader.readexactly(size))
        check_request(header)
        if header["stdin"] > self.max_input:
            raise ProtocolError(f"stdin of {header['stdin']} bytes exceeds the relay's limit of {self.max_input}")
        stdin = await reader.readexactly(header["stdin"]) if header["stdin"] else b""
        return header, stdin

    def _resolve(self, name: str) -> str:
        if "/" in name:
            raise Refused(f"the relay runs programs by bare name from the host PATH; use {os.path.basename(name)!r}, not the path {name!r}")
        if _SHELLISH & set(name) or not _NAME.match(name):
            raise Refused(
                f"{name!r} looks like shell syntax; the relay runs one program with an argv list, "
                f"e.g. ['squeue', '--me'], never a shell command"
            )
        if name not in self.allowlist:
            raise Refused(
                f"{name!r} is not allowed through the relay (allowed: {', '.join(sorted(self.allowlist))}); "
                f"add it to scalable.relay.allowlist in the host's scalable.yaml if it is safe"
            )
        path = self._programs.get(name)
        if path is None or not os.access(path, os.X_OK):  # cached: a PATH search costs ~0.1 ms
            path = self._programs[name] = shutil.which(name)
        if path is None:
            raise Refused(f"{name!r} is allowed but not found on the host's PATH; load Slurm (e.g. module load slurm) before starting the relay", 127)
        return path

    async def _run(self, program, argv, stdin, cwd, timeout, reader):
        # Commands run in a thread pool with plain subprocess (vfork): measured about twice as
        # fast per command as asyncio's subprocess transports, and just as concurrent.
        state = {"proc": None, "gone": False}
        self._running.append(state)
        work = asyncio.get_running_loop().run_in_executor(
            self._pool, _run_command, program, argv, stdin, cwd, state
        )
        # A client sends nothing after its request: EOF means it went away (killed, Ctrl-C).
        gone = asyncio.ensure_future(reader.read(1))
        try:
            await asyncio.wait({work, gone}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if work.done():
                gone.cancel()
                return work.result()
            timed_out = not gone.done()
            state["gone"] = True
            if state["proc"] is not None:
                _kill_group(state["proc"].pid)
            rc, out, err, _ = await work
        finally:
            self._running.remove(state)
        gone.cancel()
        if timed_out:
            rc = -signal.SIGKILL if rc is None else rc  # None: it never got a slot to start in
            note = f"\nscalable relay: {argv[0]} timed out after {timeout:g} s and was killed\n".encode()
            return rc, out, err + note, True
        return None, b"", b"", False

    async def _reply(self, writer, header, out: bytes, err: bytes) -> None:
        head = encode_header(header)
        try:
            if len(out) + len(err) < 1 << 16:
                writer.write(head + out + err)  # one send() for the usual small reply
            else:
                for part in (head, out, err):
                    writer.write(part)
            await writer.drain()
        except ConnectionError:
            self._log.info("client gone before its reply")


def _run_command(program, argv, stdin, cwd, state):
    """Run one command to completion (in a pool thread); ``state`` lets the loop stop it."""
    if state["gone"]:
        return None, b"", b"", False
    proc = subprocess.Popen(
        argv,
        executable=program,  # argv[0] stays the bare name, as when run from a shell
        cwd=cwd,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # so a timeout can stop the command and its children
    )
    state["proc"] = proc
    if state["gone"]:
        _kill_group(proc.pid)
    # No timeout here: communicate(timeout=) polls waitpid with sleeps (milliseconds per
    # command); the event loop enforces the timeout by killing the process group instead.
    out, err = proc.communicate(stdin or None)
    return proc.returncode, out, err, False


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


async def serve(socket_path: str, *, ready=None, **kwargs) -> None:
    """Run a relay until SIGTERM or SIGINT, then remove its socket.

    ``ready`` is called with the started :class:`RelayServer` (e.g. to print the socket path).
    """
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # before the socket exists
        loop.add_signal_handler(sig, stop.set)
    server = RelayServer(socket_path, **kwargs)
    await server.start()
    if ready is not None:
        ready(server)
    try:
        await stop.wait()
    finally:
        await server.close()


def default_socket_path() -> str:
    """``$SCALABLE_RELAY`` if set, else ``relay.sock`` in a per-user directory under
    ``$XDG_RUNTIME_DIR`` or ``/tmp`` (short, so it fits the 107-byte socket path limit)."""
    if os.environ.get("SCALABLE_RELAY"):
        return os.environ["SCALABLE_RELAY"]
    base = os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return os.path.join(base, f"scalable-relay-{os.getuid()}", "relay.sock")
