"""Wire format of the host command relay.

One request and one reply per connection. Each message is a *header* -- a 4-byte big-endian
length followed by that many bytes of UTF-8 JSON -- and then the raw byte sections the header
announces by length, back to back:

- request header ``{"v": 1, "argv": [...], "cwd": "/abs/dir", "timeout": 30.0, "stdin": N}``,
  then ``N`` bytes of standard input;
- reply header ``{"v": 1, "returncode": 0, "stdout": N, "stderr": M, "error": null,
  "timed_out": false}``, then ``N`` bytes of stdout and ``M`` bytes of stderr.

Lengths make any output size safe (no delimiter to escape, nothing cut) and let the reader know
up front how much to expect. ``error`` is set when the relay refused the request (the command
never ran); its text is a sentence meant for the user.

This module uses the standard library only: the shims copy it next to themselves so they start
in a few milliseconds without importing scalable (or dask).

Examples
--------
>>> header = encode_header({"v": 1, "argv": ["squeue"]})
>>> header[:4]
b'\\x00\\x00\\x00\\x19'
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time

VERSION = 1
#: the largest header accepted (argv, cwd...): far above any real Slurm command line
MAX_HEADER = 1 << 20
REQUEST_FIELDS = {"v": int, "argv": list, "cwd": str, "timeout": (int, float, type(None)), "stdin": int}
_LEN = struct.Struct(">I")
#: seconds a client waits for a relay whose directory exists but whose socket does not yet: the
#: kernel launcher starts the kernel first and its relay a moment later
READY_WAIT = 10.0


class ProtocolError(Exception):
    """A message did not follow the relay's wire format."""


class Truncated(ProtocolError, EOFError):
    """The peer closed the connection in the middle of a message."""


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
    if not isinstance(header, dict):
        raise ProtocolError("header is not a JSON object")
    return header


def check_request(header: dict) -> None:
    """Raise :class:`ProtocolError` unless ``header`` is a well-formed request header."""
    unknown = sorted(set(header) - set(REQUEST_FIELDS))
    if unknown:
        raise ProtocolError(f"unknown request field(s) {unknown}; this relay speaks version {VERSION}")
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
    if header["stdin"] < 0:
        raise ProtocolError("stdin length is negative")
    if header["timeout"] is not None and not 0 < header["timeout"] < float("inf"):
        raise ProtocolError("timeout must be a positive number of seconds, or null for the relay's own")


def request_header(argv, cwd: str, timeout: float | None, stdin_len: int) -> dict:
    return {"v": VERSION, "argv": list(argv), "cwd": cwd, "timeout": timeout, "stdin": stdin_len}


def reply_header(returncode: int, stdout: bytes, stderr: bytes, error: str | None = None,
                 timed_out: bool = False) -> dict:
    return {"v": VERSION, "returncode": returncode, "stdout": len(stdout), "stderr": len(stderr),
            "error": error, "timed_out": timed_out}


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


def recv_message(sock: socket.socket) -> tuple[dict, bytes, bytes]:
    """Read one reply: ``(header, stdout, stderr)``."""
    (size,) = _LEN.unpack(recv_exactly(sock, 4))
    if size > MAX_HEADER:
        raise ProtocolError(f"reply header of {size} bytes is too large")
    header = decode_header(recv_exactly(sock, size))
    try:
        n_out, n_err = int(header["stdout"]), int(header["stderr"])
    except (KeyError, TypeError, ValueError):
        raise ProtocolError("reply header lacks stdout/stderr lengths") from None
    out = recv_exactly(sock, n_out)
    err = recv_exactly(sock, n_err)
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


def starting(socket_path: str, error: OSError, deadline: float) -> bool:
    """Is ``error`` a relay still starting up (worth another try before ``deadline``)?"""
    return (isinstance(error, FileNotFoundError) and time.monotonic() < deadline
            and os.path.isdir(os.path.dirname(socket_path)))


def connect(socket_path: str) -> socket.socket:
    """Connect to the relay, waiting up to :data:`READY_WAIT` for one that is starting."""
    deadline = time.monotonic() + READY_WAIT
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(socket_path)
            return sock
        except OSError as e:
            sock.close()
            if not starting(socket_path, e, deadline):
                raise
        time.sleep(0.05)


def call(socket_path: str, argv, *, stdin: bytes = b"", cwd: str | None = None,
         timeout: float | None = None) -> tuple[dict, bytes, bytes]:
    """Send one request to the relay at ``socket_path`` and wait for its reply.

    Returns ``(reply_header, stdout, stderr)``. Raises ``OSError`` when the relay cannot be
    reached and :class:`ProtocolError` when it answers garbage.

    Examples
    --------
    >>> header, out, err = call(os.environ["SCALABLE_RELAY"], ["squeue", "--me"])  # doctest: +SKIP
    >>> header["returncode"]                                                      # doctest: +SKIP
    0
    """
    cwd = cwd or os.getcwd()
    with connect(socket_path) as sock:
        try:
            sock.sendall(encode_header(request_header(argv, cwd, timeout, len(stdin))) + stdin)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the relay refused before reading (another uid): its reply is waiting
        return recv_message(sock)
