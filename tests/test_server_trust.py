"""What the Jupyter server extension trusts, attacked with real processes and sockets.

A fake "scheduler" is a real TCP (or TLS) server speaking distributed's framing, built with
distributed's own encoder: its reply carries a pickled object that would create a directory
when unpickled. The server extension must never unpickle it, must never even connect to a
scheduler named by an entry it does not trust, and must reach a TLS cluster only through the
cluster's own CA.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import struct
import tempfile
import threading
from pathlib import Path

import pytest
from tornado.httpclient import HTTPClientError
from traitlets.config import Config

pytest_plugins = ["pytest_jupyter.jupyter_server"]


class Payload:
    """Unpickling this creates ``path``: the proof that code ran."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def frame(msg) -> bytes:
    """``msg`` as distributed's TCP comm sends it (its own encoder, its own framing)."""
    from distributed.protocol import dumps
    from distributed.protocol.utils import pack_frames

    body = pack_frames(dumps(msg))
    return struct.pack("Q", len(body)) + body


def recv_exactly(conn, n) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def recv_message(conn) -> None:
    (total,) = struct.unpack("Q", recv_exactly(conn, 8))
    body = recv_exactly(conn, total)
    (n,) = struct.unpack_from("Q", body)
    rest = sum(struct.unpack_from(f"{n}Q", body, 8)) + 8 * (n + 1) - total
    if rest > 0:
        recv_exactly(conn, rest)


class FakeScheduler:
    """Answers every request with ``reply`` after distributed's handshake; counts the replies."""

    def __init__(self, reply, ssl_context: ssl.SSLContext | None = None):
        self.reply = reply
        self.ssl_context = ssl_context
        self.sock = socket.create_server(("127.0.0.1", 0))
        port = self.sock.getsockname()[1]
        self.address = f"{'tls' if ssl_context else 'tcp'}://127.0.0.1:{port}"
        self.replies = 0
        self.conns = []  # open connections, shut down by close()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            self.conns.append(conn)
            try:
                if self.ssl_context is not None:
                    conn = self.ssl_context.wrap_socket(conn, server_side=True)
                    self.conns.append(conn)  # the raw one is detached now
                conn.sendall(
                    frame({"compression": None, "python": (3, 11, 0), "pickle-protocol": 5})
                )
                recv_message(conn)  # the caller's handshake
                recv_message(conn)  # its request
                conn.sendall(frame(self.reply))
                self.replies += 1
                while conn.recv(65536):
                    pass
            except (OSError, ConnectionError):
                pass
            finally:
                conn.close()

    def close(self):
        # a close() alone wakes neither the thread's accept() nor its recv(): shut them down
        for sock in (self.sock, *self.conns):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.sock.close()
        self.thread.join(30)
        assert not self.thread.is_alive(), "the fake scheduler's thread did not end"


@pytest.fixture
def reg():
    """A private registry in a directory that a second user can pass through (not pytest's)."""
    base = tempfile.mkdtemp(prefix="sctest-reg-")
    os.chmod(base, 0o711)
    d = Path(base) / "reg"
    d.mkdir(mode=0o700)
    yield d
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def jp_server_config(reg):
    return Config(
        {
            "ServerApp": {"jpserver_extensions": {"scalable": True}},
            "ScalableServer": {"registry_dir": str(reg), "status_timeout": 30, "scale_timeout": 30},
        }
    )


def evil_reply(marker):
    from distributed.protocol.serialize import ToPickle

    return {"status": "OK", "cluster_id": "x", "tags": ToPickle(Payload(marker))}


def write_entry(directory, cluster_id, address, **extra):
    entry = {
        "id": cluster_id,
        "name": cluster_id,
        "scheduler_address": address,
        "tags": ["gcam"],
        "pid": os.getpid(),
        "host": socket.gethostname(),
        **extra,
    }
    (directory / f"{cluster_id}.json").write_text(json.dumps(entry))
    os.chmod(directory / f"{cluster_id}.json", 0o600)


async def error_of(jp_fetch, *parts, **kwargs) -> tuple[int, str]:
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch(*parts, **kwargs)
    body = info.value.response.body
    return info.value.code, (json.loads(body)["message"] if body else "")


async def fetch_json(jp_fetch, *parts, **kwargs):
    return json.loads((await jp_fetch(*parts, **kwargs)).body)


SCALE = {"method": "POST", "body": json.dumps({"tag": "gcam", "n": 1})}


def test_the_fake_scheduler_would_run_code_through_distributed(tmp_path):
    """The attack is real: distributed's own reader unpickles the reply, whatever it is asked."""
    import asyncio

    from distributed.core import rpc

    marker = tmp_path / "ran"
    fake = FakeScheduler(evil_reply(marker))

    async def ask():
        conn = rpc(fake.address, timeout=30)
        try:
            return await conn.scalable_status()
        finally:
            await conn.close_rpc()

    try:
        asyncio.run(ask())
    finally:
        fake.close()
    assert marker.is_dir()


async def test_a_fake_scheduler_cannot_run_code_in_the_server(jp_fetch, reg, tmp_path):
    marker = tmp_path / "ran"
    fake = FakeScheduler(evil_reply(marker))
    write_entry(reg, "fake1", fake.address)
    try:
        listed = await fetch_json(jp_fetch, "scalable", "clusters")
        assert not marker.exists(), "the server unpickled the fake scheduler's reply"
        (model,) = listed["clusters"]
        assert not model["reachable"] and "pickled" in model["error"]
        one = await fetch_json(jp_fetch, "scalable", "clusters", "fake1")
        assert not one["reachable"] and "pickled" in one["error"]
        code, text = await error_of(jp_fetch, "scalable", "clusters", "fake1", "scale", **SCALE)
        assert code == 503 and "pickled" in text
    finally:
        fake.close()
    assert fake.replies >= 2  # it was asked, and answered with its payload
    assert not marker.exists()


async def test_replies_that_are_not_a_status_mark_only_their_cluster_unreachable(jp_fetch, reg):
    # plain data, but 2 MiB of empty lists (about 150 MB once decoded, in the server's event
    # loop), a list, tags that are not a map, and bytes that JSON cannot carry
    replies = {
        "inflated": {"status": "OK", "tags": {}, "pad": [[]] * (2 << 20)},
        "alist": [1, 2],
        "badtags": {"tags": ["gcam"]},
        "binary": {"tags": {}, "name": b"\xff"},
    }
    fakes = {cid: FakeScheduler(reply) for cid, reply in replies.items()}
    good = FakeScheduler({"cluster_id": "good", "tags": {"gcam": {"target": 2}}})
    for cid, fake in [*fakes.items(), ("good", good)]:
        write_entry(reg, cid, fake.address)
    try:
        listed = {
            m["id"]: m for m in (await fetch_json(jp_fetch, "scalable", "clusters"))["clusters"]
        }
        assert listed["good"]["reachable"] and listed["good"]["tags"][0]["target"] == 2
        for cid in replies:
            assert not listed[cid]["reachable"], cid
            assert (
                "not a scheduler's reply" in listed[cid]["error"]
                or "status" in listed[cid]["error"]
            ), cid
    finally:
        for fake in [*fakes.values(), good]:
            fake.close()


async def test_a_tls_cluster_answers_and_an_impostor_cannot(jp_fetch, reg, tmp_path):
    from distributed.security import Security

    cluster, impostor = Security.temporary(), Security.temporary()
    tls = {
        "ca": cluster.tls_ca_file,
        "cert": cluster.tls_client_cert,
        "key": cluster.tls_client_key,
    }
    real = FakeScheduler(
        {"cluster_id": "real", "tags": {"gcam": {"target": 3}}},
        cluster.get_listen_args("scheduler")["ssl_context"],
    )
    marker = tmp_path / "ran"
    fake = FakeScheduler(evil_reply(marker), impostor.get_listen_args("scheduler")["ssl_context"])
    write_entry(reg, "real", real.address, tls=tls)
    # the cluster's credentials, but someone else answers on the address
    write_entry(reg, "taken", fake.address, tls=tls)
    try:
        good = await fetch_json(jp_fetch, "scalable", "clusters", "real")
        assert good["reachable"] and good["tags"][0]["target"] == 3
        bad = await fetch_json(jp_fetch, "scalable", "clusters", "taken")
        assert not bad["reachable"]
        code, _ = await error_of(jp_fetch, "scalable", "clusters", "taken", "scale", **SCALE)
        assert code == 503
    finally:
        real.close()
        fake.close()
    assert fake.replies == 0 and not marker.exists()  # the TLS handshake already failed


@pytest.mark.root
async def test_entries_of_another_user_are_404_on_every_route(jp_fetch, reg, other_user):
    marker = other_user.base / "ran"
    fake = FakeScheduler(evil_reply(marker))
    entry = json.dumps(
        {
            "id": "theirs",
            "scheduler_address": fake.address,
            "tags": ["gcam"],
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }
    )
    # written by them while the directory was shared, then the directory made private again
    os.chmod(reg, 0o1777)
    try:
        other_user.sh(f"printf '%s' '{entry}' > {reg}/theirs.json")
    finally:
        os.chmod(reg, 0o700)
    # and a link of ours, planted to a file they control
    lure = other_user.base / "lure"
    lure.mkdir()
    os.chown(lure, other_user.uid, other_user.gid)
    other_user.sh(f"printf '%s' '{entry.replace('theirs', 'lured')}' > {lure}/lured.json")
    (reg / "lured.json").symlink_to(lure / "lured.json")
    try:
        assert (await fetch_json(jp_fetch, "scalable", "clusters"))["clusters"] == []
        for cid in ("theirs", "lured"):
            code, text = await error_of(jp_fetch, "scalable", "clusters", cid)
            assert code == 404 and f"No cluster {cid!r}" in text
            code, _ = await error_of(jp_fetch, "scalable", "clusters", cid, "scale", **SCALE)
            assert code == 404
    finally:
        fake.close()
    assert fake.replies == 0 and not marker.exists()  # never even asked


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "The request body is empty"),
        (b"   ", "The request body is empty"),
        # parsed or not depends on the recursion limit in force (libraries raise it): a sentence
        # either way, never a RecursionError or a 500
        (b"[" * 2000 + b"]" * 2000, ("not valid JSON", "must be a JSON object")),
        (b'{"tag": "gcam", "n": 1, "pad": "' + b"x" * 5000 + b'"}', "larger than 4096 bytes"),
    ],
    ids=["empty", "blank", "nested", "huge"],
)
async def test_bad_scale_bodies_get_a_sentence(jp_fetch, reg, body, message):
    fake = FakeScheduler({"status": "OK", "target": 1})
    write_entry(reg, "c1", fake.address)
    try:
        code, text = await error_of(
            jp_fetch,
            "scalable",
            "clusters",
            "c1",
            "scale",
            method="POST",
            body=body,
            allow_nonstandard_methods=True,
        )
    finally:
        fake.close()
    messages = (message,) if isinstance(message, str) else message
    assert code == 400 and any(m in text for m in messages)
    assert 'such as {"tag": "gcam", "n": 2}' in text
    assert fake.replies == 0
