"""The Jupyter server extension and the cluster registry, against real clusters.

Each cluster is a real :class:`scalable.LocalCluster` in its own process (as in a kernel); the
server is a real jupyter_server started by pytest-jupyter. One test runs the "kernel" inside
an image (the bubblewrap apptainer stand-in, with its own HOME and a private /tmp) to check
that the registry location both sides see is the one the server reads.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tornado.httpclient import HTTPClientError
from tornado.web import RequestHandler
from traitlets.config import Config

from scalable.jupyter import registry

pytest_plugins = ["pytest_jupyter.jupyter_server"]

# What a kernel does: create a cluster with some tags, tell the test how to reach it, and
# close it when its stdin closes (so a test can also kill it to play a dead kernel).
CLUSTER_SCRIPT = """
import json, sys
from scalable import LocalCluster
work_dir, name, tags = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
cluster = LocalCluster(work_dir=work_dir, name=name)
for tag in tags:
    cluster.add_container(tag=tag, cpus=1, memory="1G")
# count the status queries the cluster answers (each one costs a Slurm cluster one squeue)
answered = []
status = cluster.scheduler.handlers["scalable_status"]
async def counted_status(**kwargs):
    answered.append(1)
    return await status(**kwargs)
cluster.scheduler.handlers["scalable_status"] = counted_status
cluster.scheduler.handlers["test_status_count"] = lambda: len(answered)
print(json.dumps({"id": cluster.cluster_id, "scheduler_address": cluster.scheduler_address,
                  "dashboard_port": cluster.dashboard_port,
                  "dashboard_prefix": cluster.dashboard_prefix, "tls": cluster._registry_tls()}),
      flush=True)
sys.stdin.read()
cluster.close()
"""


class ClusterProcess:
    """A LocalCluster living in a child process, registered in ``registry_dir``."""

    def __init__(self, registry_dir, work_dir, name="demo", tags=("alpha", "beta"), prefix=()):
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("SCALABLE_REGISTRY_DIR", "XDG_DATA_HOME")
        }
        if registry_dir is not None:
            env["SCALABLE_REGISTRY_DIR"] = str(registry_dir)
        argv = [*prefix, sys.executable, "-c", CLUSTER_SCRIPT, str(work_dir), name, ",".join(tags)]
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
            start_new_session=True,
        )
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise RuntimeError(f"the cluster process exited with {self.proc.returncode}")
        self.info = json.loads(line)
        self.id = self.info["id"]
        self.tls = self.info["tls"]

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def kill(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def entry_security(tls: dict):
    """Schedulers speak TLS: the client credentials of a registry entry (its ``tls``)."""
    from distributed.security import Security

    return Security(
        tls_ca_file=tls["ca"],
        tls_client_cert=tls["cert"],
        tls_client_key=tls["key"],
        require_encryption=True,
    )


def scheduler_workers(address: str, tls: dict) -> list[dict]:
    """The workers the scheduler knows, asked over the wire: name and resources."""
    from distributed import Client

    with Client(address, security=entry_security(tls), timeout=10) as client:
        return [
            {"name": w["name"], "resources": w.get("resources", {})}
            for w in client.scheduler_info()["workers"].values()
        ]


@pytest.fixture(scope="module")
def shared_registry(tmp_path_factory):
    return tmp_path_factory.mktemp("registry")


@pytest.fixture(scope="module")
def cluster(shared_registry, tmp_path_factory):
    proc = ClusterProcess(shared_registry, tmp_path_factory.mktemp("work"))
    yield proc
    proc.close()


@pytest.fixture
def jp_server_config(shared_registry):
    return Config(
        {
            "ServerApp": {"jpserver_extensions": {"scalable": True, "jupyter_server_proxy": True}},
            # a loaded machine may take seconds to answer: unreachable must mean unreachable
            "ScalableServer": {"registry_dir": str(shared_registry), "status_timeout": 30},
        }
    )


async def fetch_json(jp_fetch, *parts, **kwargs):
    response = await jp_fetch(*parts, **kwargs)
    return json.loads(response.body)


async def error_of(jp_fetch, *parts, **kwargs) -> tuple[int, str]:
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch(*parts, **kwargs)
    body = info.value.response.body
    return info.value.code, (json.loads(body)["message"] if body else "")


# -- the registry on its own -------------------------------------------------------------------


def test_registry_location(monkeypatch, tmp_path):
    monkeypatch.delenv("SCALABLE_REGISTRY_DIR", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert registry.registry_dir() == tmp_path / "home" / ".local/share/scalable/registry"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert registry.registry_dir() == tmp_path / "data" / "scalable" / "registry"
    monkeypatch.setenv("SCALABLE_REGISTRY_DIR", str(tmp_path / "bound"))
    assert registry.registry_dir() == tmp_path / "bound"


def test_registry_files_are_private_and_pruned(monkeypatch, tmp_path):
    monkeypatch.setenv("SCALABLE_REGISTRY_DIR", str(tmp_path / "reg"))
    old = os.umask(0o000)  # a permissive umask must not loosen the registry's modes
    try:
        # a scheduler that answers, in a live process (this one)
        server = socket.create_server(("127.0.0.1", 0))
        live = f"tcp://127.0.0.1:{server.getsockname()[1]}"
        path = registry.register(
            {"id": "live1", "name": "a", "scheduler_address": live, "tags": ["x"]}
        )
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temp file left
    entry = json.loads(path.read_text())
    assert entry["pid"] == os.getpid() and entry["host"] == socket.gethostname()

    # a dead pid on this host
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    registry.register({"id": "deadpid", "scheduler_address": live, "pid": int(done.stdout)})
    # a live pid whose scheduler is gone (closed without unregistering)
    closed = socket.create_server(("127.0.0.1", 0))
    gone = f"tcp://127.0.0.1:{closed.getsockname()[1]}"
    closed.close()
    registry.register({"id": "gone", "scheduler_address": gone})
    (path.parent / "junk.json").write_text("{not json")

    assert [e["id"] for e in registry.list_clusters(prune=False)] == ["live1", "deadpid", "gone"]
    assert [e["id"] for e in registry.list_clusters()] == ["live1"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["live1.json"]
    registry.unregister("live1")
    registry.unregister("live1")  # twice is fine
    assert registry.list_clusters() == []
    server.close()

    with pytest.raises(ValueError, match="not valid"):
        registry.register({"id": "../escape", "scheduler_address": live})


# -- REST routes ---------------------------------------------------------------------------------


async def test_clusters_lists_a_kernel_cluster(jp_fetch, cluster, jp_base_url):
    reply = await fetch_json(jp_fetch, "scalable", "clusters")
    (model,) = [c for c in reply["clusters"] if c["id"] == cluster.id]
    assert model["name"] == "demo" and model["kind"] == "local" and model["reachable"]
    assert model["error"] is None and model["last_error"] is None
    assert model["scheduler_address"] == cluster.info["scheduler_address"]
    port, secret = cluster.info["dashboard_port"], cluster.info["dashboard_prefix"]
    assert model["dashboard_url"] == f"{jp_base_url}proxy/{port}{secret}/"
    assert model["scheduler_address"].startswith("tls://")  # and the status came over TLS
    assert [t["tag"] for t in model["tags"]] == ["alpha", "beta"]
    assert model["tags"][0] == {
        "tag": "alpha",
        "target": 0,
        "pending": 0,
        "running": 0,
        "idle": 0,
        "busy": 0,
        "waiting_tasks": 0,
        "image": None,
        "cpus": 1,
        "memory": "1G",
        "adapt": None,
    }
    one = await fetch_json(jp_fetch, "scalable", "clusters", cluster.id)
    assert one["id"] == cluster.id and one["tags"] == model["tags"]


async def test_scale_adds_a_worker_seen_by_the_scheduler(jp_fetch, cluster):
    model = await fetch_json(
        jp_fetch,
        "scalable",
        "clusters",
        cluster.id,
        "scale",
        method="POST",
        body=json.dumps({"tag": "beta", "n": 1}),
    )
    beta = next(t for t in model["tags"] if t["tag"] == "beta")
    assert beta["target"] == 1
    deadline = time.monotonic() + 180
    while beta["running"] != 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        model = await fetch_json(jp_fetch, "scalable", "clusters", cluster.id)
        beta = next(t for t in model["tags"] if t["tag"] == "beta")
    assert beta["running"] == 1
    workers = scheduler_workers(cluster.info["scheduler_address"], cluster.tls)
    assert [w["resources"] for w in workers] == [{"beta": 1}]

    model = await fetch_json(
        jp_fetch,
        "scalable",
        "clusters",
        cluster.id,
        "scale",
        method="POST",
        body=json.dumps({"tag": "beta", "n": 0}),
    )
    assert next(t for t in model["tags"] if t["tag"] == "beta")["target"] == 0


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"tag": "no such", "n": 1}, 400, "tag 'no such' is not valid"),
        ({"tag": "gamma", "n": 1}, 400, "call cluster.add_container(tag='gamma'"),
        ({"tag": "alpha", "n": -1}, 400, "n must be a whole number"),
        ({"tag": "alpha", "n": "3"}, 400, "n must be a whole number"),
        ([1, 2], 400, "Send a JSON body"),
    ],
)
async def test_scale_mistakes_come_back_as_sentences(jp_fetch, cluster, body, status, message):
    code, text = await error_of(
        jp_fetch, "scalable", "clusters", cluster.id, "scale", method="POST", body=json.dumps(body)
    )
    assert code == status and message in text


async def test_open_sidebars_share_one_status_query(jp_fetch, cluster):
    from distributed.core import rpc

    async def answered():
        conn = rpc(
            cluster.info["scheduler_address"],
            connection_args=entry_security(cluster.tls).get_connection_args("client"),
        )
        try:
            return await conn.test_status_count()
        finally:
            await conn.close_rpc()

    before = await answered()
    replies = await asyncio.gather(
        *(fetch_json(jp_fetch, "scalable", "clusters") for _ in range(5))
    )
    assert all(
        any(c["id"] == cluster.id and c["reachable"] for c in r["clusters"]) for r in replies
    )
    assert await answered() == before + 1
    await asyncio.sleep(2.2)  # ScalableServer.status_cache_seconds later, a fresh answer
    await fetch_json(jp_fetch, "scalable", "clusters")
    assert await answered() == before + 2


async def test_unknown_cluster_is_404(jp_fetch, cluster):
    code, text = await error_of(
        jp_fetch,
        "scalable",
        "clusters",
        "nope",
        "scale",
        method="POST",
        body=json.dumps({"tag": "alpha", "n": 1}),
    )
    assert code == 404 and "No cluster 'nope' is registered" in text


def _scalable_routes(app):
    """Every (regex, handler class) of the app whose pattern lies under {base_url}scalable/."""
    found = []

    def walk(router):
        for rule in getattr(router, "rules", []):
            target = rule.target
            if hasattr(target, "rules"):
                walk(target)
            elif isinstance(target, type):
                pattern = getattr(rule.matcher, "regex", None)
                if pattern is not None and "/scalable" in pattern.pattern:
                    found.append((pattern.pattern, target))

    walk(app.default_router)
    return found


async def test_every_scalable_route_requires_authentication(jp_fetch, jp_serverapp, cluster):
    routes = _scalable_routes(jp_serverapp.web_app)
    assert len(routes) >= 3, routes
    checked = 0
    for pattern, handler in routes:
        # a concrete URL for the pattern: fill each named group with the live cluster's id
        path = re.sub(r"\(\?P<[^>]+>[^)]*\)", cluster.id, pattern).rstrip("$").replace("/?", "")
        path = path.replace("\\.", ".").replace("%40", "@")
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            if getattr(handler, method.lower()) is getattr(RequestHandler, method.lower()):
                continue  # not implemented by this handler (tornado answers 405)
            body = (
                json.dumps({"tag": "alpha", "n": 1}) if method in ("POST", "PUT", "PATCH") else None
            )
            # no token, but a matching XSRF cookie and header: only authentication may refuse it
            headers = {"Authorization": "", "Cookie": "_xsrf=abc", "X-XSRFToken": "abc"}
            code, _ = await error_of(
                jp_fetch,
                path.lstrip("/").split("/", 1)[1],
                method=method,
                body=body,
                headers=headers,
                follow_redirects=False,
            )
            assert code in (302, 403), (method, path, code)
            checked += 1
    assert checked >= 3
    # and none of them scaled anything
    model = await fetch_json(jp_fetch, "scalable", "clusters", cluster.id)
    assert next(t for t in model["tags"] if t["tag"] == "alpha")["target"] == 0


async def test_dashboard_through_the_proxy_needs_the_token(jp_fetch, jp_ws_fetch, cluster):
    port, secret = str(cluster.info["dashboard_port"]), cluster.info["dashboard_prefix"].strip("/")
    page = await jp_fetch("proxy", port, secret, "status")
    assert b"bokeh" in page.body.lower()
    code, _ = await error_of(
        jp_fetch,
        "proxy",
        port,
        secret,
        "status",
        headers={"Authorization": ""},
        follow_redirects=False,
    )
    assert code in (302, 403)
    # without the cluster's secret prefix, even Jupyter's own user gets nothing
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch("proxy", port, "status")
    assert info.value.code == 404
    # the Bokeh websocket goes through the proxy too, and not without the token
    ws = await jp_ws_fetch("proxy", port, secret, "status", "ws")
    ws.close()
    with pytest.raises(HTTPClientError) as info:
        await jp_ws_fetch("proxy", port, secret, "status", "ws", headers={"Authorization": ""})
    assert info.value.code in (302, 403)


async def test_dead_kernel_is_pruned(jp_fetch, shared_registry, tmp_path):
    doomed = ClusterProcess(shared_registry, tmp_path, name="doomed", tags=("solo",))
    ids = [c["id"] for c in (await fetch_json(jp_fetch, "scalable", "clusters"))["clusters"]]
    assert doomed.id in ids
    doomed.kill()  # no chance to unregister: the kernel died
    ids = [c["id"] for c in (await fetch_json(jp_fetch, "scalable", "clusters"))["clusters"]]
    assert doomed.id not in ids
    assert not (shared_registry / f"{doomed.id}.json").exists()


class TestUnansweringScheduler:
    """A live process whose scheduler port accepts connections but never answers (a hung kernel)."""

    @pytest.fixture
    def jp_server_config(self, tmp_path):
        return Config(
            {
                "ServerApp": {"jpserver_extensions": {"scalable": True}},
                "ScalableServer": {
                    "registry_dir": str(tmp_path / "reg"),
                    "status_timeout": 1,
                    "scale_timeout": 1,
                },
            }
        )

    async def test_shown_unreachable_and_scaling_says_why(self, jp_fetch, tmp_path, monkeypatch):
        monkeypatch.setenv("SCALABLE_REGISTRY_DIR", str(tmp_path / "reg"))
        with socket.create_server(("127.0.0.1", 0)) as hung:  # listens, never accepts
            address = f"tcp://127.0.0.1:{hung.getsockname()[1]}"
            registry.register(
                {
                    "id": "hung1",
                    "name": "stuck",
                    "scheduler_address": address,
                    "dashboard_port": 1234,
                    "tags": ["gcam"],
                    "kind": "slurm",
                }
            )
            (model,) = (await fetch_json(jp_fetch, "scalable", "clusters"))["clusters"]
            assert model["id"] == "hung1" and not model["reachable"]
            assert model["error"].startswith("Cannot reach the scheduler")
            assert model["tags"] == [
                {
                    "tag": "gcam",
                    "target": None,
                    "pending": None,
                    "running": None,
                    "idle": None,
                    "busy": None,
                    "waiting_tasks": None,
                    "image": None,
                    "cpus": None,
                    "memory": None,
                    "adapt": None,
                }
            ]
            code, text = await error_of(
                jp_fetch,
                "scalable",
                "clusters",
                "hung1",
                "scale",
                method="POST",
                body=json.dumps({"tag": "gcam", "n": 1}),
            )
            assert code == 503 and text.startswith("Cannot reach the scheduler of stuck")


# -- the kernel inside an image, the server on the host ----------------------------------------


@pytest.mark.root
class TestKernelInImage:
    @pytest.fixture
    def jp_server_config(self):
        # the server's default location: ~/.local/share/scalable/registry of its own HOME
        return Config({"ServerApp": {"jpserver_extensions": {"scalable": True}}})

    async def test_cluster_made_in_an_image_is_listed(
        self, jp_fetch, jp_home_dir, tmp_path, monkeypatch, apptainer, make_image
    ):
        monkeypatch.delenv("SCALABLE_REGISTRY_DIR", raising=False)
        monkeypatch.delenv("XDG_DATA_HOME", raising=False)
        host_dir = registry.registry_dir()  # the server's, under its HOME in /tmp
        assert str(host_dir).startswith(str(jp_home_dir))
        host_dir.mkdir(parents=True, mode=0o700)
        image = make_image("scalable")
        kernel_home = tmp_path / "kernel-home"
        kernel_home.mkdir()
        work = tmp_path / "work"
        work.mkdir()
        # what the kernel launcher does: its own HOME, the host registry bound in, the variable set
        prefix = [
            apptainer,
            "exec",
            "--home",
            f"{kernel_home}:/home/kernel",
            "--bind",
            f"{host_dir}:/scalable-registry",
            "--bind",
            f"{work}:/kernel-work",
            "--pwd",
            "/kernel-work",
            "--env",
            "SCALABLE_REGISTRY_DIR=/scalable-registry",
            image,
        ]
        proc = ClusterProcess(None, "/kernel-work", name="in-image", tags=("gcam",), prefix=prefix)
        try:
            assert (host_dir / f"{proc.id}.json").exists()
            reply = await fetch_json(jp_fetch, "scalable", "clusters")
            (model,) = reply["clusters"]
            assert model["id"] == proc.id and model["reachable"]
            assert [t["tag"] for t in model["tags"]] == ["gcam"]
        finally:
            proc.close()
        assert not (host_dir / f"{proc.id}.json").exists()  # closing unregisters through the bind
        assert (await fetch_json(jp_fetch, "scalable", "clusters"))["clusters"] == []


# -- installation --------------------------------------------------------------------------------


def test_extensions_enabled_after_install():
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTER_")}
    lab = subprocess.run(
        [sys.executable, "-m", "jupyterlab.labextensions", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    out = re.sub(r"\x1b\[[0-9;]*m", "", lab.stdout + lab.stderr)
    assert re.search(r"^\s*scalable v\S+ enabled OK", out, re.M), out
    srv = subprocess.run(
        [sys.executable, "-m", "jupyter_server.extension.serverextension", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    out = re.sub(r"\x1b\[[0-9;]*m", "", srv.stdout + srv.stderr)
    assert re.search(r"^\s*scalable enabled", out, re.M), out
    assert re.search(r"^\s*scalable \S+ OK", out, re.M), out
    labext = Path(sys.prefix) / "share" / "jupyter" / "labextensions" / "scalable"
    assert (labext / "package.json").exists() and (labext / "install.json").exists()


def test_no_dashboard_link_to_a_scheduler_that_does_not_answer():
    # its port may be anyone's by now: a proxied link would show their page in Jupyter's origin
    from scalable.jupyter.handlers import cluster_model

    entry = {
        "id": "c1",
        "scheduler_address": "tls://127.0.0.1:1",
        "dashboard_port": 8787,
        "dashboard_prefix": "/s3cr3t",
        "tags": ["gcam"],
    }
    assert (
        cluster_model(entry, None, "/", error="Cannot reach the scheduler")["dashboard_url"] is None
    )
    live = cluster_model(entry, {"dashboard_port": 8787}, "/")
    assert live["dashboard_url"] == "/proxy/8787/s3cr3t/"
