"""The host side of the relay: runs allowlisted Slurm commands for the container.

The kernel and the Dask scheduler run inside the scalable image, where Slurm's commands and
munge are absent. :class:`RelayServer` listens on a Unix socket that only its owner can reach
(a private directory made as :mod:`scalable.relay.paths` describes, a 0600 socket, and an
``SO_PEERCRED`` uid check), and runs one allowlisted program per request with an argv list --
never a shell, never a network address -- logging each one. Each request is served by a thread
of its own (blocking sockets and pipes: a round trip costs a fraction of what an event loop
adds), so a slow command never delays a ``squeue``; :mod:`scalable.relay.pool` bounds them.

Examples
--------
From a shell on the host::

    $ scalable relay
    scalable relay serving /tmp/scalable-relay-k2j4x9/relay.sock (log: ...)
    $ SCALABLE_RELAY=/tmp/scalable-relay-k2j4x9/relay.sock python -c \\
        "from scalable.relay.client import relay_run; print(relay_run(['squeue']).stdout)"
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import shlex
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterable

from .allowlist import DEFAULT_ALLOWLIST, Programs, Refused
from .commands import communicate, hung_up, kill_group
from .paths import (
    RelayError,
    bind_private,
    clear_stale_socket,
    pick_socket_directory,
    remove_socket,
    request_logger,
    socket_directory,
)
from .pool import RequestThreads
from .protocol import (
    MAX_HEADER,
    ProtocolError,
    check_request,
    decode_header,
    encode_header,
    recv_exactly,
    reply_header,
)

__all__ = [
    "DEFAULT_ALLOWLIST",
    "Refused",
    "RelayError",
    "RelayServer",
    "clear_stale_socket",
    "default_socket_path",
    "serve",
]

logger = logging.getLogger(__name__)

_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
#: seconds a client has to send its whole request; a stalled one is dropped
READ_TIMEOUT = 30.0


class RelayServer:
    """Serve allowlisted host commands on a private Unix socket.

    Parameters
    ----------
    socket_path : str, optional
        Where to listen; by default ``relay.sock`` in a fresh private directory (see
        :func:`~scalable.relay.paths.pick_socket_directory`). A given directory is created 0700
        if missing, and refused if it is a symbolic link, is not ours or others can write it.
        Keep it short: Unix socket paths are limited to 107 bytes.
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
    max_threads : int, optional
        Requests served at once (reading, waiting for a slot, running, replying); past that a
        client is told the relay is busy and retries.
    idle_timeout : float, optional
        Seconds an idle request thread lives on (a few are kept warm).

    Examples
    --------
    >>> async def main():                                              # doctest: +SKIP
    ...     server = RelayServer("/tmp/my-relay/relay.sock", allowlist=["squeue"])
    ...     await server.start()
    ...     await server.serve_forever()
    """

    def __init__(
        self,
        socket_path: str | None = None,
        *,
        allowlist: Iterable[str] | None = None,
        timeout: float | None = None,
        log_file: str | None = None,
        max_input: int | None = None,
        max_concurrent: int | None = None,
        max_threads: int | None = None,
        idle_timeout: float | None = None,
    ):
        from .. import config

        self._given = socket_path is not None
        self.socket_path = os.path.abspath(socket_path) if socket_path else ""
        self.allowlist = frozenset(config.get("relay.allowlist", allowlist, DEFAULT_ALLOWLIST))
        self.timeout = float(config.get("relay.timeout", timeout, 600))
        self.max_input = int(config.get("relay.max-input", max_input, 64 << 20))
        self.max_concurrent = int(config.get("relay.max-concurrent", max_concurrent, 32))
        self.max_threads = int(config.get("relay.max-threads", max_threads, 64))
        self.idle_timeout = float(config.get("relay.idle-timeout", idle_timeout, 10))
        self._log_file = config.get("relay.log-file", log_file)
        self._programs = Programs(self.allowlist)  # raises for entries that are not names
        self._listener: socket.socket | None = None
        self._bound: tuple[int, int] | None = None  # (device, inode) of the socket we made
        self._slots: threading.BoundedSemaphore | None = None  # commands running at once
        self._lock = threading.Lock()  # guards the three below
        self._closing = False
        self._running: set = set()  # Popen objects in flight, stopped by close()
        self._conns: set = set()  # open client connections, shut down by close()
        self.threads = RequestThreads(
            self._served, max_threads=self.max_threads, idle_timeout=self.idle_timeout
        )
        self._log_stream = None
        self._closed: asyncio.Event | None = None
        self._uid = os.getuid()
        self._log = logging.getLogger(__name__)  # replaced by the request log in start()

    @property
    def log_file(self) -> str:
        """The request log: as configured, else ``relay.log`` beside the socket."""
        return self._log_file or os.path.join(os.path.dirname(self.socket_path), "relay.log")

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Make or check the socket's directory, bind the socket (replacing a stale one of ours)
        and start accepting requests."""
        if self._given:
            directory, created = socket_directory(os.path.dirname(self.socket_path))
        else:
            directory, created = socket_directory(pick_socket_directory())
        self.socket_path = os.path.join(
            directory, os.path.basename(self.socket_path) or "relay.sock"
        )
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if len(os.fsencode(self.socket_path)) > 107:
                raise RelayError(
                    f"socket path {self.socket_path} is longer than 107 bytes; choose a shorter one"
                )
            clear_stale_socket(self.socket_path)
            self._log, self._log_stream = request_logger(
                self.log_file, f"scalable.relay.requests.{id(self)}"
            )
            self._bound = bind_private(listener, self.socket_path)
            listener.listen(128)
        except BaseException:
            listener.close()
            if self._bound is not None:
                remove_socket(self.socket_path, self._bound)
            if self._log_stream is not None:
                self._log_stream.close()
            if created:
                try:
                    os.rmdir(directory)  # ours and still empty; a log in it stays
                except OSError:
                    pass
            raise
        self._listener = listener
        self._closed = asyncio.Event()
        self._slots = threading.BoundedSemaphore(self.max_concurrent)
        threading.Thread(
            target=self._accept, args=(listener,), name="relay-accept", daemon=True
        ).start()
        self._log.info(
            "relay started pid=%d socket=%s allowlist=%s",
            os.getpid(),
            self.socket_path,
            ",".join(sorted(self.allowlist)),
        )

    async def serve_forever(self) -> None:
        assert self._closed is not None, "call start() first"
        await self._closed.wait()

    async def close(self) -> None:
        """Stop accepting requests, stop the commands in flight and remove the socket."""
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() blocked in its thread
            listener.close()
        with self._lock:
            self._closing = True  # no command starts from now on
            for proc in self._running:  # nobody will read their output any more
                kill_group(proc.pid)
            for conn in self._conns:
                # end-of-input wakes threads reading a request or watching their client; they
                # can still write the reply that says the relay stopped
                try:
                    conn.shutdown(socket.SHUT_RD)
                except OSError:
                    pass
            self.threads.close()  # idle request threads end
        deadline = time.monotonic() + 3.0
        while self._conns and time.monotonic() < deadline:  # let them answer before we exit
            await asyncio.sleep(0.02)
        remove_socket(self.socket_path, self._bound)  # only if it is still the one we made
        self._log.info("relay stopped")
        for h in list(self._log.handlers):
            h.close()
            self._log.removeHandler(h)
        if self._log_stream is not None:
            self._log_stream.close()
        if self._closed is not None:
            self._closed.set()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                conn, _ = listener.accept()
            except OSError:
                if self._listener is listener:
                    time.sleep(0.05)  # e.g. out of file descriptors: retry, without spinning
                continue
            with self._lock:
                if self._closing:
                    conn.close()
                    return
                self._conns.add(conn)
            if not self.threads.submit(conn):
                self._busy(conn)

    def _served(self, conn) -> None:
        try:
            self._handle(conn)
        finally:
            with self._lock:
                self._conns.discard(conn)

    def _busy(self, conn: socket.socket) -> None:
        """No thread for ``conn`` (at the limit, or one could not start): say so and go on
        accepting. The request is never read, so the client may safely send it again."""
        try:
            self._log.info(
                "BUSY no thread for a request (%d serving, at most %d); told the client to retry",
                self.threads.count,
                self.max_threads,
            )
            conn.setblocking(False)  # a short reply fits the socket buffer; never wait here
            conn.send(
                encode_header(
                    reply_header(
                        75,
                        b"",
                        b"",
                        retry=True,  # EX_TEMPFAIL
                        error="the host relay is too busy to take this request; run the command again in a moment",
                    )
                )
            )
        except OSError:  # the client is gone: nothing to tell it
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    # --- one request (in a pool thread) -------------------------------------------------------

    def _handle(self, conn: socket.socket) -> None:
        pid = uid = -1
        argv: list[str] = []
        t0 = time.monotonic()
        try:
            pid, uid, _gid = _CRED.unpack(
                conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
            )
            if uid != self._uid:
                raise Refused(f"the relay serves only uid {self._uid}; uid {uid} is refused")
            header, stdin = self._read_request(conn, t0 + READ_TIMEOUT)
            argv = header["argv"]
            program = self._programs.resolve(argv[0])
            cwd = header["cwd"]
            if not os.path.isabs(cwd) or not os.path.isdir(cwd):
                raise Refused(
                    f"the working directory {cwd} does not exist on the host; run from a directory "
                    f"bound at the same path inside and outside the image (e.g. the work directory)"
                )
            timeout = (
                self.timeout
                if header["timeout"] is None
                else min(float(header["timeout"]), self.timeout)
            )
            rc, out, err, timed_out = self._run(program, argv, stdin, cwd, timeout, conn)
            if rc is None:  # the client went away; the command was stopped
                self._log.info(
                    "uid=%d pid=%d client gone, command killed after %.3fs cwd=%s argv=%s",
                    uid,
                    pid,
                    time.monotonic() - t0,
                    cwd,
                    shlex.join(argv),
                )
                return
            took = time.monotonic() - t0
            self._reply(conn, reply_header(rc, out, err, timed_out=timed_out), out, err)
            # logged after replying: the caller does not wait for the log file
            self._log.info(
                "uid=%d pid=%d rc=%d%s %.3fs cwd=%s argv=%s",
                uid,
                pid,
                rc,
                " TIMEOUT" if timed_out else "",
                took,
                cwd,
                shlex.join(argv),
            )
        except Refused as e:
            self._log.info("uid=%d pid=%d REFUSED %s argv=%s", uid, pid, e, shlex.join(argv))
            self._refuse(conn, e.returncode, str(e))
        except (TimeoutError, EOFError, OSError) as e:  # before ProtocolError: Truncated is both
            self._log.info("uid=%d pid=%d dropped: %s", uid, pid, type(e).__name__)
        except ProtocolError as e:
            self._log.info("uid=%d pid=%d BAD REQUEST %s", uid, pid, e)
            self._refuse(conn, 126, f"bad relay request: {e}")
        except Exception:  # one bad request must never take the relay down
            logger.exception("relay request failed")
            self._log.exception("uid=%d pid=%d internal error argv=%s", uid, pid, shlex.join(argv))
        finally:
            conn.close()

    def _refuse(self, conn: socket.socket, returncode: int, message: str) -> None:
        self._reply(conn, reply_header(returncode, b"", b"", error=message), b"", b"")
        # The client may still be sending (a refusal can come before its request was read):
        # closing now would make its write fail and could hide the reply from it, so wait
        # briefly for it to finish, discarding what it sends.
        try:
            conn.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + 1.0
            while (left := deadline - time.monotonic()) > 0:
                conn.settimeout(left)
                if not conn.recv(1 << 16):
                    break
        except OSError:
            pass

    def _read_request(self, conn: socket.socket, deadline: float) -> tuple[dict, bytes]:
        (size,) = struct.unpack(">I", recv_exactly(conn, 4, deadline))
        if size > MAX_HEADER:
            raise ProtocolError(f"header of {size} bytes exceeds {MAX_HEADER}")
        header = decode_header(recv_exactly(conn, size, deadline))
        check_request(header)
        if header["stdin"] > self.max_input:
            raise ProtocolError(
                f"stdin of {header['stdin']} bytes exceeds the relay's limit of {self.max_input}"
            )
        stdin = recv_exactly(conn, header["stdin"], deadline) if header["stdin"] else b""
        return header, stdin

    def _run(self, program, argv, stdin, cwd, timeout, conn):
        """Run one command; ``(None, ...)`` if the client hung up first (the command is killed)."""
        deadline = time.monotonic() + timeout
        note = (
            f"\nscalable relay: {argv[0]} timed out after {timeout:g} s and was killed\n".encode()
        )
        while not self._slots.acquire(timeout=0.25):  # all slots busy: keep watching the client
            if self._closing:  # (before the client check: closing ends its input too)
                raise Refused("the host relay is stopping; run the command again once it is back")
            if hung_up(conn):
                return None, b"", b"", False  # never started: nothing to undo
            if time.monotonic() >= deadline:
                return -signal.SIGKILL, b"", note.lstrip(), True  # never got a slot to start in
        try:
            if self._closing:
                raise Refused("the host relay is stopping; run the command again once it is back")
            if hung_up(conn):
                return None, b"", b"", False  # gone while waiting: nothing started
            with self._lock:
                if self._closing:
                    raise Refused(
                        "the host relay is stopping; run the command again once it is back"
                    )
                try:
                    proc = subprocess.Popen(
                        argv,
                        executable=program,  # argv[0] stays the bare name, as from a shell
                        cwd=cwd,
                        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        start_new_session=True,  # so a timeout stops the command and its children
                    )
                except OSError as e:
                    raise Refused(
                        f"{argv[0]} could not be started on the host: {e.strerror or e}",
                        127 if e.errno == errno.ENOENT else 126,
                    ) from None
                self._running.add(proc)
            try:
                out, err, outcome = communicate(proc, stdin, conn, deadline)
            finally:
                with self._lock:
                    self._running.discard(proc)
        finally:
            self._slots.release()
        if self._closing:
            raise Refused(
                f"the host relay stopped while {argv[0]} ran, and stopped it", -signal.SIGKILL
            )
        if outcome == "gone":
            return None, b"", b"", False
        if outcome == "timeout":
            return proc.returncode, out, err + note, True
        return proc.returncode, out, err, False

    def _reply(self, conn: socket.socket, header, out: bytes, err: bytes) -> None:
        head = encode_header(header)
        try:
            conn.settimeout(READ_TIMEOUT)  # a client that stops reading is dropped
            if len(out) + len(err) < 1 << 16:
                conn.sendall(head + out + err)  # one send() for the usual small reply
            else:
                for part in (head, out, err):
                    conn.sendall(part)
        except OSError:
            self._log.info("client gone before its reply")


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


def default_socket_path() -> str | None:
    """``$SCALABLE_RELAY`` if set, else ``None``: the relay then makes a fresh private directory
    (a fixed name such as ``/tmp/scalable-relay-<uid>`` is one another user can plant first)."""
    return os.environ.get("SCALABLE_RELAY") or None
