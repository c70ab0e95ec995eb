"""Actions of the Scalable sidebar beyond scaling: ``POST {base_url}scalable/clusters/{id}/close``.

The server never closes a cluster itself: it asks the cluster's scheduler (the
``scalable_close`` handler each cluster installs), so the kernel that made the cluster stays
the only owner of its jobs and cancels exactly them, as ``cluster.close()`` would.
:func:`close_cluster` holds the logic; :class:`CloseHandler` only translates HTTP.
"""

from __future__ import annotations

import asyncio
import json

import tornado.web
from jupyter_server.utils import url_path_join

from . import registry
from .handlers import _ID, ScalableHandler, call_scheduler


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
    raise TimeoutError(f"{entry.get('name', entry['id'])} was asked to close but still runs "
                       f"after {wait:g} s: close it from its notebook with cluster.close().")


class CloseHandler(ScalableHandler):
    @tornado.web.authenticated
    async def post(self, cluster_id):
        """Close the cluster (its workers stop, its jobs are cancelled); replies ``{}``."""
        entry = self.entry_or_404(cluster_id)
        name = entry.get("name", cluster_id)
        try:
            await close_cluster(entry, self.config_obj.status_timeout,
                                self.config_obj.scale_timeout, self.config_obj.registry_dir)
        except OSError as e:
            raise tornado.web.HTTPError(503, f"Cannot reach the scheduler of {name}: {e}") from None
        except (CloseRefused, TimeoutError) as e:
            raise tornado.web.HTTPError(409, str(e)) from None
        self.settings["scalable_status_cache"].forget(entry["id"])
        self.finish(json.dumps({"id": entry["id"], "closed": True}))


def action_routes(base_url: str) -> list[tuple]:
    """The sidebar's action routes, under ``{base_url}scalable/clusters/{id}/``."""
    return [(url_path_join(base_url, "scalable", "clusters", _ID, "close") + "/?", CloseHandler)]
