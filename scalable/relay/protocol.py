"""Wire format of the host command relay.

One request and one reply per connection. Each message is a *header* -- a 4-byte big-endian
length followed by that many bytes of UTF-8 JSON -- and then the raw byte sections the header
announces by length, back to back:

- request header ``{"v": 1, "argv": [...], "cwd": "/abs/dir", "timeout": 30.0, "stdin": N}``,
  then ``N`` bytes of standard input;
- reply header ``{"v": 1, "returncode": 0, "stdout": N, "stderr": M, "error": null,
  "timed_out": false, "retry": false}``, then ``N`` bytes of stdout and ``M`` bytes of stderr.

Lengths make any output size safe (no delimiter to escape, nothing cut) and let the reader know
up front how much to expect. ``error`` is set when the relay refused the request (the command
never ran); its text is a sentence meant for the user. ``retry`` is set when the relay was too
busy to read the request at all: sending it again later is safe, and :func:`call` does so.

Before sending anything the client checks with ``SO_PEERCRED`` that the socket is served by its
own uid: a socket path can be planted by another user, and a job script must never reach them.
Each call has deadlines (to connect, to be answered), so a relay that stops answering is an
error, not a hang.

This module uses the standard library only: the shims copy it next to themselves so they start
in a few milliseconds without importing scalable (or dask).

Examples
--------
>>> header = encode_header({"v": 1, "argv": ["squeue"]})
>>> header[:4]
b'\\x00\\x00\\x00\\x19'
"""

from __future__ import annotations

import errno
import json
import os
import socket
import struct
import time

VERSION = 1
#: the largest header accepted (argv, cwd...): far above any real Slurm command line
MAX_HEADER = 1 << 20
REQUEST_FIELDS = {
    "v": int,
    "argv": list,
    "cwd": str,
    "timeout": (int, float, type(None)),
    "stdin": int,
}
_LEN = struct.Struct(">I")
#: seconds a client waits for a relay whose directory exists but whose socket does not yet: the
#: kernel launcher starts the kernel first and its relay a moment later
READY_WAIT = 10.0
#: default seconds to get a connection served (a busy relay is retried meanwhile); config
#: ``scalable.relay.connect-timeout``, also read from its environment variable by the shims
CONNECT_TIMEOUT = 60.0
#: default longest wait for a reply (config ``scalable.relay.reply-timeout``); a call that
#: asks for a command timeout waits that long plus :data:`REPLY_GRACE` at most
REPLY_TIMEOUT = 3600.0
REPLY_GRACE = 60.0
_ENV = {
    "connect": "DASK_SCALABLE__RELAY__CONNECT_TIMEOUT",
    "reply": "DASK_SCALABLE__RELAY__REPLY_TIMEOUT",
}
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class ProtocolError(Exception):
    """A message did not follow the relay's wire format."""


class Truncated(ProtocolError, EOFError):
    """The peer closed the connection in the middle of a message."""


class ForeignRelay(ProtocolError):
    """The relay's socket is served by another user; nothing was sent to it."""


class NoReply(ProtocolError):
    """The relay did not answer before the client's deadline."""


def encode_header(header: dict) -> bytes:
    """Return ``header`` as a length-prefixed JSON frame."""
    data = json.dumps(header, separators=(",", ":")).encode()
    return _LEN.pack(len(data)) + data


def decode_header(data: bytes) -> dict:
    """Parse the JSON of a header frame (without its length prefix)."""
    try:
        header = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError) as e:
        raise ProtocolError(f"header is not UTF-8 JSON: {e}") from None
    except RecursionError:
        raise ProtocolError("header JSON is nested too deeply; send a flat JSON object") from None
    if not isinstance(header, dict):
        raise ProtocolError("header is not a JSON object")
    return header


def check_request(header: dict) -> None:
    """Raise :class:`ProtocolError` unless ``header`` is a well-formed request header."""
    unknown = sorted(set(header) - set(REQUEST_FIELDS))
    if unknown:
        raise ProtocolError(
            f"unknown request field(s) {unknown}; this relay speaks version {VERSION}"
        )
    for key, kind in REQUEST_FIELDS.items():
        if key not in header:
            raise ProtocolError(f"request field {key!r} is missing")
        if not isinstance(header[key], kind) or isinstance(header[key], bool):
            raise ProtocolError(f"request field {key!r} has the wrong type")
    if header["v"] != VERSION:
        raise ProtocolError(f"protocol version {header['v']} is not {VERSION}; update scalable")
    if not header["argv"] or not all(isinstance(a, str) for a in header["argv"]):
        raise ProtocolError("argv must be a non-empty list of strings")
    if any("\0" in a for a in [*header["argv"], header["cwd"]]):
        raise ProtocolError("argv and cwd cannot contain NUL characters")
    check_text(header["argv"], header["cwd"])
    if header["stdin"] < 0:
        raise ProtocolError("stdin length is negative")
    if header["timeout"] is not None and not 0 < header["timeout"] < float("inf"):
        raise ProtocolError(
            "timeout must be a positive number of seconds, or null for the relay's own"
        )


def check_text(argv, cwd: str) -> None:
    """Refuse argv or cwd that is not valid UTF-8 text.

    JSON carries lone surrogates (``"\\udcff"``), which Python turns back into arbitrary bytes
    when it runs the command, and which no UTF-8 log can record: a command the log cannot name
    does not run.
    """
    for i, text in enumerate([*argv, cwd]):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            what = "the working directory" if i == len(argv) else f"argument {i} of argv"
            raise ProtocolError(
                f"{what} ({text!r}) is not valid UTF-8 text (it holds a lone surrogate, e.g. from "
                f"undecodable bytes in a file name); rename the file or pass only UTF-8 text"
            ) from None


def request_header(argv, cwd: str, timeout: float | None, stdin_len: int) -> dict:
    return {"v": VERSION, "argv": list(argv), "cwd": cwd, "timeout": timeout, "stdin": stdin_len}


def reply_header(
    returncode: int,
    stdout: bytes,
    stderr: bytes,
    error: str | None = None,
    timed_out: bool = False,
    retry: bool = False,
) -> dict:
    return {
        "v": VERSION,
        "returncode": returncode,
        "stdout": len(stdout),
        "stderr": len(stderr),
        "error": error,
        "timed_out": timed_out,
        "retry": retry,
    }


# --- blocking client side (shims, relay_run) ---------------------------------------------------


def recv_exactly(sock: socket.socket, n: int, deadline: float | None = None) -> bytes:
    """Read ``n`` bytes; :class:`Truncated` if the peer closes first, ``TimeoutError`` if
    ``deadline`` (a :func:`time.monotonic` time) passes first."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            sock.settimeout(left)
        k = sock.recv_into(view[got:], n - got)
        if not k:
            raise Truncated(f"connection closed after {got} of {n} bytes")
        got += k
    return bytes(buf)


def recv_message(sock: socket.socket, deadline: float | None = None) -> tuple[dict, bytes, bytes]:
    """Read one reply: ``(header, stdout, stderr)``, by ``deadline`` (``TimeoutError``)."""
    (size,) = _LEN.unpack(recv_exactly(sock, 4, deadline))
    if size > MAX_HEADER:
        raise ProtocolError(f"reply header of {size} bytes is too large")
    header = decode_header(recv_exactly(sock, size, deadline))
    try:
        n_out, n_err = int(header["stdout"]), int(header["stderr"])
    except (KeyError, TypeError, ValueError):
        raise ProtocolError("reply header lacks stdout/stderr lengths") from None
    out = recv_exactly(sock, n_out, deadline)
    err = recv_exactly(sock, n_err, deadline)
    return header, out, err


async def arecv_message(reader) -> tuple[dict, bytes, bytes]:
    """Coroutine twin of :func:`recv_message` for an ``asyncio.StreamReader``."""
    (size,) = _LEN.unpack(await reader.readexactly(4))
    if size > MAX_HEADER:
        raise ProtocolError(f"reply header of {size} bytes is too large")
    header = decode_header(await reader.readexactly(size))
    try:
        n_out, n_err = int(header["stdout"]), int(header["stderr"])
    except (KeyError, TypeError, ValueError):
        raise ProtocolError("reply header lacks stdout/stderr lengths") from None
    return header, await reader.readexactly(n_out), await reader.readexactly(n_err)


def retryable(socket_path: str, error: OSError, ready_by: float, deadline: float) -> bool:
    """Is ``error`` worth another try: a relay still starting up (its directory exists, its
    socket not yet; until ``ready_by``), or one whose backlog is full (until ``deadline``)?"""
    now = time.monotonic()
    if isinstance(error, FileNotFoundError):
        return now < ready_by and os.path.isdir(os.path.dirname(socket_path))
    return error.errno == errno.EAGAIN and now < deadline


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a connected Unix socket."""
    return _CRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size))[1]


def check_peer(sock: socket.socket, socket_path: str) -> None:
    """Raise :class:`ForeignRelay` unless our own uid serves ``sock`` (call before sending)."""
    uid, me = peer_uid(sock), os.getuid()
    if uid != me:
        raise ForeignRelay(
            f"the relay socket {socket_path} is served by uid {uid}, not by you (uid {me}), so nothing "
            f"was sent to it: another user may be impersonating your relay; point SCALABLE_RELAY at "
            f"your own relay (restart the kernel) and tell your administrators"
        )


def timeouts(
    connect_timeout: float | None, reply_timeout: float | None, timeout: float | None
) -> tuple[float, float]:
    """Seconds to get served and to get the reply, for a command allowed ``timeout`` seconds."""
    connect_for = _setting(connect_timeout, "connect", CONNECT_TIMEOUT)
    reply_for = _setting(reply_timeout, "reply", REPLY_TIMEOUT)
    if timeout:
        reply_for = min(reply_for, timeout + REPLY_GRACE)
    return connect_for, reply_for


def _setting(value, key: str, default: float) -> float:
    if value is None:  # the shims cannot read dask's config: its environment variable will do
        try:
            value = float(os.environ[_ENV[key]])
        except (KeyError, ValueError):
            value = default
    return float(value)


def no_reply(socket_path: str, seconds: float) -> NoReply:
    return NoReply(
        f"the host relay at {socket_path} did not answer within {seconds:g} s; it may be "
        f"stuck: restart the kernel (or the relay), or raise scalable.relay.reply-timeout"
    )


def connect(socket_path: str, deadline: float | None = None) -> socket.socket:
    """Connect to the relay and check that it is our own.

    Waits up to :data:`READY_WAIT` for a relay that is starting, and until ``deadline`` (default
    :data:`CONNECT_TIMEOUT` from now) for one too busy to accept. Raises ``OSError`` when the
    relay cannot be reached and :class:`ForeignRelay` when another user serves the socket.
    """
    now = time.monotonic()
    deadline = now + CONNECT_TIMEOUT if deadline is None else deadline
    ready_by = min(deadline, now + READY_WAIT)
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(max(deadline - time.monotonic(), 0.001))
            sock.connect(socket_path)
            check_peer(sock, socket_path)
            sock.settimeout(None)
            return sock
        except OSError as e:
            sock.close()
            if not retryable(socket_path, e, ready_by, deadline):
                raise
        except BaseException:
            sock.close()
            raise
        time.sleep(0.05)


def call(
    socket_path: str,
    argv,
    *,
    stdin: bytes = b"",
    cwd: str | None = None,
    timeout: float | None = None,
    connect_timeout: float | None = None,
    reply_timeout: float | None = None,
) -> tuple[dict, bytes, bytes]:
    """Send one request to the relay at ``socket_path`` and wait for its reply.

    Returns ``(reply_header, stdout, stderr)``. A relay too busy to take the request is asked
    again until ``connect_timeout`` has passed. Raises ``OSError`` when the relay cannot be
    reached, :class:`ForeignRelay` when another user serves the socket, :class:`NoReply` when
    no reply comes within ``reply_timeout`` and :class:`ProtocolError` when it answers garbage.

    Examples
    --------
    >>> header, out, err = call(os.environ["SCALABLE_RELAY"], ["squeue", "--me"])  # doctest: +SKIP
    >>> header["returncode"]                                                      # doctest: +SKIP
    0
    """
    cwd = cwd or os.getcwd()
    connect_for, reply_for = timeouts(connect_timeout, reply_timeout, timeout)
    t0 = time.monotonic()
    connect_by, reply_by = t0 + connect_for, t0 + reply_for
    request = encode_header(request_header(argv, cwd, timeout, len(stdin))) + stdin
    delay = 0.05
    while True:
        with connect(socket_path, connect_by) as sock:
            try:
                sock.settimeout(max(reply_by - time.monotonic(), 0.001))
                sock.sendall(request)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the relay refused before reading (busy, another uid): its reply is waiting
            except TimeoutError:
                raise no_reply(socket_path, reply_for) from None
            try:
                reply = recv_message(sock, reply_by)
            except TimeoutError:
                raise no_reply(socket_path, reply_for) from None
        if not reply[0].get("retry") or time.monotonic() + delay >= connect_by:
            return reply
        time.sleep(delay)  # the request was never read: sending it again is safe
        delay = min(2 * delay, 1.0)
