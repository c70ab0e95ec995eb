"""Actions of the Scalable sidebar beyond scaling, under ``{base_url}scalable/clusters/{id}/``.

``POST close``   close the cluster
``POST adapt``   ``{"tag": "gcam", "minimum": 0, "maximum": 10}`` adapts that tag between
                 0 and 10 workers; ``{"tag": "gcam", "minimum": null, "maximum": null}``
                 turns its adapt off

The server never closes or adapts a cluster itself: it asks the cluster's scheduler (the
``scalable_close`` and ``scalable_adapt`` handlers each cluster installs), so the kernel that
made the cluster stays the only owner of its jobs, as ``cluster.close()`` and
``cluster.adapt(tag=...)`` would. :func:`close_cluster`, :func:`adapt_request` and
:func:`adapt_tag` hold the logic; the handlers only translate HTTP.
"""

from __future__ import annotations

import asyncio
import json

import tornado.web
from jupyter_server.utils import url_path_join

from .. import config
from ..containers import ContainerError, check_tag
from . import registry
from .handlers import _ID, ScalableHandler, call_scheduler, parse_scale_body

_ADAPT_HINT = 'e.g. {"tag": "gcam", "minimum": 0, "maximum": 10}, or both null to turn adapt off'
_ADAPT_BODY = 'Send a JSON body such as {"tag": "gcam", "minimum": 0, "maximum": 10}'


class CloseRefused(Exception):
    """The cluster answered but would not close; the message says why."""


async def close_cluster(entry: dict, timeout: float, wait: float = 30.0, directory=None) -> None:
    """Ask the cluster of ``entry`` to close, then wait until its registry entry is gone.

    Raises ``OSError`` when the scheduler cannot be reached, :class:`CloseRefused` when it
    refuses, ``TimeoutError`` when the cluster still runs ``wait`` seconds later.
    """
    reply = await call_scheduler(entry, "scalable_close", timeout)
    if not isinstance(reply, dict) or reply.get("status") != "OK":
        message = reply.get("message") if isinstance(reply, dict) else None
        raise CloseRefused(message or "The cluster refused to close.")
    # the cluster closes after replying: its workers first, its scheduler last, so it is done
    # once it has unregistered and its scheduler no longer answers
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while loop.time() < deadline:
        current = await asyncio.to_thread(registry.read_entry, entry["id"], directory)
        if current is None and not await asyncio.to_thread(registry.is_alive, entry):
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(
        f"{entry.get('name', entry['id'])} was asked to close but still runs "
        f"after {wait:g} s: close it from its notebook with cluster.close()."
    )


def adapt_request(body: dict, most: int | None = None) -> tuple[str, int | None, int | None]:
    """The ``(tag, minimum, maximum)`` of an adapt request; ``ValueError`` with a sentence.

    ``minimum`` and ``maximum`` are both whole numbers with ``0 <= minimum <= maximum <=
    most`` (``most``: ``scalable.max-workers-per-tag``), or both None: adapt off.

    Examples
    --------
    >>> adapt_request({"tag": "gcam", "minimum": 0, "maximum": 10}, most=1000)
    ('gcam', 0, 10)
    >>> adapt_request({"tag": "gcam", "minimum": None, "maximum": None}, most=1000)
    ('gcam', None, None)
    >>> adapt_request({"tag": "gcam", "minimum": 5, "maximum": 2}, most=1000)
    Traceback (most recent call last):
    ...
    ValueError: minimum (5) is more than maximum (2): give a range such as 2 to 5.
    """
    if most is None:
        most = int(config.get("max-workers-per-tag"))
    unknown = sorted(set(body) - {"tag", "minimum", "maximum"})
    if unknown:
        raise ValueError(
            f"Unknown field {unknown[0]!r}: send only tag, minimum and maximum, {_ADAPT_HINT}."
        )
    tag = body.get("tag")
    try:
        check_tag(tag)
    except (ContainerError, TypeError, ValueError) as e:
        raise ValueError(str(e)) from None
    minimum, maximum = body.get("minimum"), body.get("maximum")
    if minimum is None and maximum is None:
        return tag, None, None
    for name, value in (("minimum", minimum), ("maximum", maximum)):
        if value is None:
            raise ValueError(
                f"{name} is missing: give both minimum and maximum to adapt "
                f"{tag}, or neither to turn its adapt off ({_ADAPT_HINT})."
            )
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
            raise ValueError(
                f"{name} must be a whole number of workers from 0 to {most} "
                f"(scalable.max-workers-per-tag), not {value!r}."
            )
    if minimum > maximum:
        raise ValueError(
            f"minimum ({minimum}) is more than maximum ({maximum}): give a range "
            f"such as {maximum} to {minimum}."
        )
    return tag, minimum, maximum


class AdaptRefused(Exception):
    """The cluster answered but would not adapt; the message is its own sentence."""


async def adapt_tag(entry: dict, tag: str, minimum, maximum, timeout: float) -> dict:
    """Ask the cluster of ``entry`` to adapt ``tag`` (both bounds None: stop adapting).

    Returns the scheduler's reply (``{"status": "OK", "adapt": ..., "target": ...}``). Raises
    ``OSError`` when the scheduler cannot be reached, :class:`AdaptRefused` when it refuses
    (an unknown tag, or a cluster too old to adapt per tag).
    """
    try:
        reply = await call_scheduler(
            entry, "scalable_adapt", timeout, tag=tag, minimum=minimum, maximum=maximum
        )
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 -- the handler failed there: its sentence, as is
        raise AdaptRefused(str(e)) from None
    if not isinstance(reply, dict) or reply.get("status") != "OK":
        message = reply.get("message") if isinstance(reply, dict) else None
        # no message: not scalable's handler (a scheduler of a scalable without per-tag adapt)
        raise AdaptRefused(
            message
            or f"{entry.get('name', entry['id'])} cannot adapt {tag}: "
            "its scalable predates per-tag adapt; restart its kernel."
        )
    return reply


class AdaptHandler(ScalableHandler):
    @tornado.web.authenticated
    async def post(self, cluster_id):
        """Adapt a tag between ``minimum`` and ``maximum`` workers, or stop; replies the cluster's model."""
        entry = self.entry_or_404(cluster_id)
        try:
            tag, minimum, maximum = adapt_request(parse_scale_body(self.request.body, _ADAPT_BODY))
        except ValueError as e:
            raise tornado.web.HTTPError(400, str(e)) from None
        try:
            await adapt_tag(entry, tag, minimum, maximum, self.config_obj.scale_timeout)
        except OSError as e:
            raise tornado.web.HTTPError(
                503, f"Cannot reach the scheduler of {entry.get('name', cluster_id)}: {e}"
            ) from None
        except AdaptRefused as e:
            raise tornado.web.HTTPError(400, str(e)) from None
        self.settings["scalable_status_cache"].forget(entry["id"])  # show the range at once
        self.finish(json.dumps(await self.model_of(entry, await self.notebooks_by_kernel())))


class CloseHandler(ScalableHandler):
    @tornado.web.authenticated
    async def post(self, cluster_id):
        """Close the cluster (its workers stop, its jobs are cancelled); replies ``{}``."""
        entry = self.entry_or_404(cluster_id)
        name = entry.get("name", cluster_id)
        try:
            await close_cluster(
                entry,
                self.config_obj.status_timeout,
                self.config_obj.scale_timeout,
                self.config_obj.registry_dir,
            )
        except OSError as e:
            raise tornado.web.HTTPError(503, f"Cannot reach the scheduler of {name}: {e}") from None
        except (CloseRefused, TimeoutError) as e:
            raise tornado.web.HTTPError(409, str(e)) from None
        self.settings["scalable_status_cache"].forget(entry["id"])
        self.finish(json.dumps({"id": entry["id"], "closed": True}))


def action_routes(base_url: str) -> list[tuple]:
    """The sidebar's action routes, under ``{base_url}scalable/clusters/{id}/``."""
    return [
        (url_path_join(base_url, "scalable", "clusters", _ID, "close") + "/?", CloseHandler),
        (url_path_join(base_url, "scalable", "clusters", _ID, "adapt") + "/?", AdaptHandler),
    ]
