"""One request to a scheduler handler, spoken so that no reply can run code here.

The Jupyter server asks clusters for their status and to scale. distributed's own ``rpc``
would do, but its reader unpickles any ``__Pickled__`` sub-frame the peer sends, whatever the
caller asks for: whoever answers at the address in a registry entry (a scheduler that died and
another user's process now on its port) could run code in the Jupyter server. Here the same
wire format (distributed's frame prelude, then msgpack) is read with ``msgpack`` alone:
a reply is plain data (dicts, lists, strings, numbers). A pickled or serialized sub-frame is
never decoded; the reply that carries one is refused, so there is nothing to unpickle.

When the entry holds TLS credentials (a cluster with ``security``), the connection presents
the cluster's client certificate and accepts only a server whose certificate the cluster's CA
signed, so an impostor on the port cannot even answer.

Examples
--------
>>> import asyncio
>>> asyncio.run(request("tcp://127.0.0.1:1", "scalable_status", timeout=5))  # doctest: +SKIP
{'cluster_id': '3f2c9a...', 'tags': {...}, ...}
"""

from __future__ import annotations

import asyncio
import struct
import sys
from urllib.parse import urlsplit

import msgpack

# a status is a few KiB: anything near this is not a scheduler. msgpack grows ~75x when decoded
# (16 MiB of empty lists took 1.2 GB and 16 s of the server's event loop), so keep it small
MAX_REPLY_BYTES = 1 << 20
MAX_FRAMES = 64
_MARKERS = ("__Pickled__", "__Serialized__")


class ProtocolError(OSError):
    """The peer did not answer as a scheduler does (or sent what is never decoded here)."""


class RemoteError(Exception):
    """The scheduler's handler failed; the message is its own text."""


def _refuse_serialized(obj: dict) -> dict:
    if any(k in obj for k in _MARKERS):
        raise ProtocolError(
            "the reply carries a pickled or serialized object; "
            "scalable decodes only plain data from a scheduler"
        )
    return obj


def decode(frames: list[bytes]) -> object:
    """The message in ``frames`` as plain data; :class:`ProtocolError` for anything else.

    Examples
    --------
    >>> decode([msgpack.dumps({"status": "OK", "n": 2})])
    {'status': 'OK', 'n': 2}
    >>> decode([msgpack.dumps({"x": {"__Pickled__": 1}}), b"..."])
    Traceback (most recent call last):
    ...
    scalable.jupyter.scheduler_wire.ProtocolError: the reply carries a pickled or serialized object; scalable decodes only plain data from a scheduler
    """
    if not frames:
        raise ProtocolError("the peer sent an empty message")
    try:
        # no ext_hook: an extension type stays an inert msgpack.ExtType, never an object
        return msgpack.loads(
            frames[0],
            object_hook=_refuse_serialized,
            raw=False,
            strict_map_key=False,
            use_list=True,
        )
    except ProtocolError:
        raise
    except Exception as e:  # noqa: BLE001 -- any decoding failure means: not a scheduler's reply
        raise ProtocolError(f"the peer's reply is not a scheduler's: {e}") from None


def encode(msg: dict) -> bytes:
    """``msg`` framed as distributed's TCP comm writes a message of one msgpack frame.

    Examples
    --------
    >>> len(encode({"op": "x"}))
    30
    """
    frame = msgpack.dumps(msg, use_bin_type=True)
    prelude = struct.pack("QQ", 1, len(frame))
    return struct.pack("Q", len(prelude) + len(frame)) + prelude + frame


async def read_message(reader: asyncio.StreamReader) -> object:
    """Read one framed message and decode it with :func:`decode`."""
    (total,) = struct.unpack("Q", await reader.readexactly(8))
    if total > MAX_REPLY_BYTES:
        raise ProtocolError(f"the peer announced a {total}-byte message: not a scheduler's reply")
    body = await reader.readexactly(total)
    (n,) = struct.unpack_from("Q", body)
    if not 0 < n <= MAX_FRAMES or len(body) < 8 * (n + 1):
        raise ProtocolError(f"the peer sent {n} frames: not a scheduler's reply")
    sizes = struct.unpack_from(f"{n}Q", body, 8)
    if sum(sizes) + total > MAX_REPLY_BYTES:
        raise ProtocolError("the peer's message is too large: not a scheduler's reply")
    # only frame 0 is ever decoded; later frames (sub-frames of serialized objects) are read
    # off the stream to keep it in step, and dropped
    return decode([bytes(body[8 * (n + 1) : 8 * (n + 1) + sizes[0]])])


def _ssl_context(tls: dict):
    from distributed.security import Security

    return Security(
        tls_ca_file=tls.get("ca"),
        tls_client_cert=tls.get("cert"),
        tls_client_key=tls.get("key"),
        require_encryption=True,
    ).get_connection_args("client")["ssl_context"]


async def request(address: str, op: str, timeout: float, tls: dict | None = None, **kwargs):
    """Call handler ``op`` of the scheduler at ``address`` and return its reply (plain data).

    Raises ``OSError`` when nobody (or nobody trusted) answers within ``timeout`` seconds,
    :class:`RemoteError` when the handler failed.
    """
    parts = urlsplit(address)
    if parts.scheme not in ("tcp", "tls") or not parts.hostname or parts.port is None:
        raise ProtocolError(f"{address!r} is not a tcp:// or tls:// scheduler address")
    if parts.scheme == "tls" and not tls:
        raise ProtocolError(
            f"{address} is a TLS scheduler but the registry entry holds no credentials for it"
        )
    ssl = _ssl_context(tls) if tls else None

    async def exchange():
        reader, writer = await asyncio.open_connection(
            parts.hostname, parts.port, ssl=ssl, server_hostname=parts.hostname if ssl else None
        )
        try:
            # distributed's handshake: each side sends its settings first (no compression here)
            writer.write(
                encode(
                    {
                        "compression": None,
                        "python": list(sys.version_info[:3]),
                        "pickle-protocol": 5,
                    }
                )
            )
            await read_message(reader)
            writer.write(encode({"op": op, "reply": True, **kwargs}))
            await writer.drain()
            return await read_message(reader)
        finally:
            writer.close()

    try:
        reply = await asyncio.wait_for(exchange(), timeout)
    except asyncio.TimeoutError:
        raise OSError(f"the scheduler at {address} did not answer within {timeout:g} s") from None
    except asyncio.IncompleteReadError:
        raise ProtocolError(f"the scheduler at {address} closed the connection") from None
    if isinstance(reply, dict) and reply.get("status") == "uncaught-error":
        raise RemoteError(str(reply.get("exception_text") or "the scheduler's handler failed"))
    return reply
