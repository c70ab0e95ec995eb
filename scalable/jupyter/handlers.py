"""REST routes of the Jupyter server extension, all under ``{base_url}scalable/``.

``GET clusters``                 every registered cluster with its scheduler's live counts
``GET clusters/{id}``            one of them
``POST clusters/{id}/scale``     ``{"tag": "gcam", "n": 3}`` sets that tag's target

The server never runs Slurm commands: counts and scaling go through the handlers
(``scalable_status``, ``scalable_scale``) that each cluster registers on its own scheduler, so
the cluster object in the kernel stays the only owner of its jobs. ``cluster_model`` builds the
JSON that ``labextension/src/types.ts`` mirrors.

Examples
--------
>>> cluster_model({"id": "c1", "name": "demo", "scheduler_address": "tcp://127.0.0.1:1",
...                "dashboard_port": 8787, "tags": ["gcam"]}, None, "/")["dashboard_url"]
'/proxy/8787/'
"""

from __future__ import annotations

import asyncio
import json
import re
import time

import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from ..containers import ContainerError, check_tag
from . import registry, scheduler_wire

# Upper bound on a scale request: a typo ("1000000") must not reach a scheduler.
MAX_WORKERS = 10_000
_TAG_FIELDS = ("target", "pending", "running", "idle", "busy", "waiting_tasks")
_SPEC_FIELDS = ("image", "cpus", "memory")  # what each worker of the tag gets, for the sidebar
# {"minimum": m, "maximum": M or None} while the tag adapts, else None
_ADAPT_FIELDS = ("adapt",)


def dashboard_url(base_url: str, port, prefix: str | None = None) -> str | None:
    """The dashboard root through jupyter-server-proxy (``{base_url}proxy/{port}{prefix}/``).

    Built from the port and the entry's secret ``dashboard_prefix`` (the dashboard answers
    nothing outside it), never from ``cluster.dashboard_link``, which names the machine's
    address rather than the loopback one the proxy reaches.

    Examples
    --------
    >>> dashboard_url("/user/ada/", 8787, "/s3cr3t")
    '/user/ada/proxy/8787/s3cr3t/'
    >>> dashboard_url("/", None) is None
    True
    """
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        return None
    secret = prefix.strip("/") if isinstance(prefix, str) else ""
    if not re.fullmatch(r"[A-Za-z0-9_-]*", secret):
        return None
    return url_path_join(base_url, "proxy", str(port), secret) + "/"


def tag_model(tag: str, status: dict | None) -> dict:
    """One tag's counts (``None`` where the scheduler did not say) and its container's size.

    Examples
    --------
    >>> tag_model("gcam", {"target": 2, "running": 1, "cpus": 10, "memory": "20G"})["memory"]
    '20G'
    >>> tag_model("gcam", {"adapt": {"minimum": 0, "maximum": 10}})["adapt"]
    {'minimum': 0, 'maximum': 10}
    """
    status = status or {}
    return {"tag": tag, **{k: status.get(k) for k in _TAG_FIELDS + _SPEC_FIELDS + _ADAPT_FIELDS}}


def cluster_model(
    entry: dict,
    status: dict | None,
    base_url: str,
    error: str | None = None,
    notebook: str | None = None,
) -> dict:
    """The JSON model of one cluster: its registry entry merged with its scheduler's status.

    ``status`` is the reply of the scheduler's ``scalable_status`` handler, ``None`` when the
    scheduler did not answer (then ``error`` says why).
    """
    status = status or {}
    tags = dict.fromkeys(entry.get("tags") or [])
    tags.update(status.get("tags") or {})
    port = status.get("dashboard_port", entry.get("dashboard_port"))
    return {
        "id": entry["id"],
        "name": status.get("name") or entry.get("name") or entry["id"],
        "kind": entry.get("kind") or "cluster",
        "host": entry.get("host"),
        "pid": entry.get("pid"),
        "kernel_id": entry.get("kernel_id"),
        "notebook": notebook,
        "scheduler_address": entry.get("scheduler_address"),
        "dashboard_port": port,
        # only while the cluster's own scheduler answers: once it is gone, its port may be
        # anyone's, and a link through the proxy would show their page in Jupyter's origin
        "dashboard_url": (
            dashboard_url(base_url, port, entry.get("dashboard_prefix")) if error is None else None
        ),
        "walltime": status.get("walltime", entry.get("walltime")),
        "created": entry.get("created"),
        "reachable": error is None,
        "error": error,
        # the cluster's own last failure (e.g. sbatch refused a burst of add_workers(wait=False))
        "last_error": status.get("last_error"),
        "tags": [tag_model(tag, tags[tag]) for tag in sorted(tags)],
    }


async def call_scheduler(entry: dict, method: str, timeout: float, **kwargs):
    """Call one of the cluster's scheduler handlers; raise ``OSError`` if it cannot be reached.

    Through :mod:`.scheduler_wire`, never distributed's ``rpc``: a reply is decoded as plain
    data only, so whatever answers at the entry's address cannot run code in this server; with
    the entry's TLS credentials only the cluster's own scheduler can answer at all.
    """
    return await scheduler_wire.request(
        entry["scheduler_address"], method, timeout, tls=entry.get("tls") or None, **kwargs
    )


def check_status(status):
    """``status`` if it has the shape of a ``scalable_status`` reply (a JSON-ready dict whose
    ``tags`` map names to dicts); else :class:`~.scheduler_wire.ProtocolError`, so that whatever
    answers at a scheduler's old port gets its cluster marked unreachable, not a 500 for all.

    Examples
    --------
    >>> check_status({"tags": {"gcam": {"target": 1}}})
    {'tags': {'gcam': {'target': 1}}}
    """
    tags = status.get("tags") if isinstance(status, dict) else None
    try:
        ok = (
            isinstance(status, dict)
            and isinstance(tags or {}, dict)
            and all(
                isinstance(k, str) and isinstance(v, (dict, type(None)))
                for k, v in (tags or {}).items()
            )
            and json.dumps(status) is not None
        )
    except (TypeError, ValueError):  # bytes or extension types: not what a status holds
        ok = False
    if not ok:
        raise scheduler_wire.ProtocolError("the peer's reply is not a scalable scheduler's status")
    return status


MAX_BODY_BYTES = 4096  # {"tag": ..., "n": ...} is a few dozen bytes
_BODY_HINT = 'Send a JSON body such as {"tag": "gcam", "n": 2}'


def parse_scale_body(raw: bytes, hint: str = _BODY_HINT) -> dict:
    """The JSON object of a scale (or other action) request, or an HTTP 400 with a sentence.

    ``hint`` is the sentence that shows a good body.

    Examples
    --------
    >>> parse_scale_body(b'{"tag": "gcam", "n": 2}')
    {'tag': 'gcam', 'n': 2}
    >>> parse_scale_body(b"")
    Traceback (most recent call last):
    ...
    tornado.web.HTTPError: HTTP 400: Bad Request (The request body is empty: send a JSON body such as {"tag": "gcam", "n": 2}.)
    """
    if not raw or not raw.strip():
        raise tornado.web.HTTPError(400, f"The request body is empty: {hint[0].lower()}{hint[1:]}.")
    if len(raw) > MAX_BODY_BYTES:
        raise tornado.web.HTTPError(
            400, f"The request body is larger than {MAX_BODY_BYTES} bytes. {hint}."
        )
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than the parser goes
        raise tornado.web.HTTPError(400, f"The request body is not valid JSON. {hint}.") from None
    if not isinstance(body, dict):
        raise tornado.web.HTTPError(400, f"The request body must be a JSON object. {hint}.")
    return body


class StatusCache:
    """Recent ``scalable_status`` answers per cluster, shared by every open sidebar.

    A status costs the cluster one ``squeue``: with several browser tabs refreshing, each
    cluster still answers at most once per ``ttl`` seconds (concurrent requests share one call).
    """

    def __init__(self, ttl: float):
        self.ttl = ttl
        self._calls: dict[str, tuple[float, asyncio.Future]] = {}

    async def get(self, cluster_id: str, fetch):
        now = time.monotonic()
        self._calls = {k: v for k, v in self._calls.items() if now - v[0] < self.ttl}
        if cluster_id not in self._calls:
            self._calls[cluster_id] = (now, asyncio.ensure_future(fetch()))
        # shield: one client going away must not cancel the call the others wait for
        return await asyncio.shield(self._calls[cluster_id][1])

    def forget(self, cluster_id: str) -> None:
        self._calls.pop(cluster_id, None)


class ScalableHandler(APIHandler):
    """Base of the extension's handlers: access to its settings and the registry."""

    @property
    def config_obj(self):
        return self.settings["scalable_config"]

    async def notebooks_by_kernel(self) -> dict:
        """Map kernel id -> notebook path, for the sidebar's "kernel" line."""
        try:
            sessions = await self.session_manager.list_sessions()
        except Exception:  # noqa: BLE001 -- no session manager (bare server): the kernel id still shows
            return {}
        return {s["kernel"]["id"]: s.get("path") for s in sessions if s.get("kernel")}

    async def model_of(self, entry: dict, notebooks: dict) -> dict:
        """Ask the cluster's scheduler for its status and build the cluster's model."""
        timeout = self.config_obj.status_timeout
        try:
            status = check_status(
                await self.settings["scalable_status_cache"].get(
                    entry["id"], lambda: call_scheduler(entry, "scalable_status", timeout)
                )
            )
            error = None
        except Exception as e:  # noqa: BLE001 -- an unreachable or old cluster must not hide the others
            status, error = None, f"Cannot reach the scheduler: {e}"
        return cluster_model(
            entry, status, self.base_url, error, notebooks.get(entry.get("kernel_id"))
        )

    def entry_or_404(self, cluster_id: str) -> dict:
        entry = registry.read_entry(cluster_id, self.config_obj.registry_dir)
        if entry is None:
            raise tornado.web.HTTPError(
                404, f"No cluster {cluster_id!r} is registered; refresh the list."
            )
        return entry


class ClustersHandler(ScalableHandler):
    @tornado.web.authenticated
    async def get(self):
        """List the live clusters (dead entries are pruned on the way)."""
        directory = self.config_obj.registry_dir
        entries = await asyncio.to_thread(registry.list_clusters, True, directory)
        notebooks = await self.notebooks_by_kernel()
        models = await asyncio.gather(*(self.model_of(e, notebooks) for e in entries))
        self.finish(json.dumps({"clusters": list(models)}))


class ClusterHandler(ScalableHandler):
    @tornado.web.authenticated
    async def get(self, cluster_id):
        """One cluster's model."""
        entry = self.entry_or_404(cluster_id)
        self.finish(json.dumps(await self.model_of(entry, await self.notebooks_by_kernel())))


class ScaleHandler(ScalableHandler):
    @tornado.web.authenticated
    async def post(self, cluster_id):
        """Set a tag's target number of workers: body ``{"tag": str, "n": int}``."""
        entry = self.entry_or_404(cluster_id)
        body = parse_scale_body(self.request.body)
        tag, n = body.get("tag"), body.get("n")
        try:
            check_tag(tag)
        except (ContainerError, TypeError, ValueError) as e:
            raise tornado.web.HTTPError(400, str(e)) from None
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_WORKERS:
            raise tornado.web.HTTPError(
                400, f"n must be a whole number of workers from 0 to {MAX_WORKERS}, not {n!r}."
            )
        try:
            # starting workers may take a while (local processes wait until they run)
            reply = await call_scheduler(
                entry, "scalable_scale", self.config_obj.scale_timeout, tag=tag, n=n
            )
        except OSError as e:
            raise tornado.web.HTTPError(
                503, f"Cannot reach the scheduler of {entry.get('name', cluster_id)}: {e}"
            ) from None
        except Exception as e:  # noqa: BLE001 -- the cluster refused (e.g. an unknown tag): its sentence, as is
            raise tornado.web.HTTPError(400, str(e)) from None
        if isinstance(reply, dict) and reply.get("status") == "error":
            raise tornado.web.HTTPError(
                400, str(reply.get("message") or "The cluster refused to scale.")
            )
        self.settings["scalable_status_cache"].forget(entry["id"])  # show the new target at once
        self.finish(json.dumps(await self.model_of(entry, await self.notebooks_by_kernel())))


_ID = r"(?P<cluster_id>[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127})"


def routes(base_url: str) -> list[tuple]:
    """The extension's ``(pattern, handler)`` list, each under ``{base_url}scalable/``."""
    return [
        (url_path_join(base_url, "scalable", "clusters") + "/?", ClustersHandler),
        (url_path_join(base_url, "scalable", "clusters", _ID) + "/?", ClusterHandler),
        (url_path_join(base_url, "scalable", "clusters", _ID, "scale") + "/?", ScaleHandler),
    ]
