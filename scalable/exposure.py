"""How a tagged cluster shows itself to others, and to whom.

Scheduler handlers let other processes (the JupyterLab server extension) read a cluster's status
and scale it through its scheduler; the registry entry tells the JupyterLab sidebar the cluster
exists; ``_widget``/``_repr_html_`` display it in a notebook. Only holders of the cluster's TLS
credentials reach the scheduler, and only holders of its secret prefix read its dashboard (see
:mod:`scalable.security`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
import time

from distributed.utils import format_dashboard_link

from . import registry, security

logger = logging.getLogger(__name__)


class ExposedCluster:
    """Mixin of :class:`scalable.tagged.TaggedCluster`: handlers, registry entry, display."""

    # -- who may reach it --------------------------------------------------------------------
    def _init_security(self, requested, where, parent=None):
        """TLS credentials (``self._tls``, None when opted out) and the dashboard's secret."""
        self._tls = security.resolve(requested, where, parent=parent, name=self.cluster_id)
        self.dashboard_prefix = security.dashboard_prefix()

    def _close_security(self):
        if getattr(self, "_tls", None) is not None:
            self._tls.close()

    # -- scheduler handlers: how the JupyterLab sidebar reaches this cluster -----------------
    def _install_handlers(self):
        self.scheduler.handlers["scalable_status"] = self._handle_status
        self.scheduler.handlers["scalable_scale"] = self._handle_scale
        self.scheduler.handlers["scalable_close"] = self._handle_close
        self.scheduler.handlers["scalable_adapt"] = self._handle_adapt

    async def _handle_status(self):
        return {
            "cluster_id": self.cluster_id,
            "name": self._name,
            "kind": self.kind,
            "tags": await self._tag_status(),
            "walltime": getattr(self, "walltime", None),
            "dashboard_port": self.dashboard_port,
            "last_error": self.last_error,
        }

    async def _handle_scale(self, tag=None, n=None):
        try:
            pool = self.pools[self._check_tag(tag)]
            n = int(n)
            if n < 0:
                raise ValueError("n must be 0 or more")
            await pool.scale_to(n, asynchronous=True, wait=False)
        except (KeyError, ValueError, TypeError) as e:
            return {"status": "error", "message": str(e)}
        return {"status": "OK", "target": pool.target}

    async def _handle_adapt(self, tag=None, minimum=None, maximum=None):
        """Turn ``tag``'s adapt on (``minimum``/``maximum``; ``maximum=None``: no upper bound)
        or off (both None)."""
        try:
            pool = self.pools[self._check_tag(tag)]
            if minimum is None and maximum is None:
                pool.stop_adapt("stopped from the sidebar")
            else:
                pool.adapt(int(minimum or 0), math.inf if maximum is None else int(maximum))
        except (KeyError, ValueError, TypeError) as e:
            return {"status": "error", "message": str(e)}
        return {"status": "OK", "adapt": pool.adapt_range, "target": pool.target}

    async def _handle_close(self):
        # reply first: closing stops the scheduler that carries this very reply
        asyncio.get_running_loop().call_soon(
            lambda: asyncio.ensure_future(self._close_from_outside())
        )
        return {"status": "OK"}

    async def _close_from_outside(self):
        try:
            await self._close()
        except Exception as e:  # noqa: BLE001 -- nobody waits for this: say it in the kernel's log
            logger.warning("closing %s from the sidebar failed: %s", self._name, e)

    # -- notebook display: the panel lives in scalable.jupyter.widget ------------------------
    def _show_closed(self):
        """Tell a displayed panel that the cluster is gone (closed here or from the sidebar)."""
        panel = vars(self).get("_scalable_panel")
        if panel is not None:
            panel.closed()

    def _widget(self):
        from .jupyter.widget import cluster_widget

        return cluster_widget(self)

    def _repr_html_(self, cluster_status=None):
        from .jupyter.panel_html import summary_html

        return summary_html(self)

    # -- identity -----------------------------------------------------------------------------
    @property
    def dashboard_port(self):
        try:
            return self.scheduler.http_server.port
        except AttributeError:
            return None

    @property
    def dashboard_link(self) -> str:
        """The dashboard's address, secret prefix included.

        Dask's ``distributed.dashboard.link`` template (proxied under Jupyter, see
        ``scalable.jupyter.links``) with the prefix after the port; the dashboard listens on
        loopback, whatever address the scheduler has.
        """
        port = self.dashboard_port
        if not port:
            return ""
        return format_dashboard_link("127.0.0.1", f"{port}{self.dashboard_prefix}")

    @property
    def scheduler_address(self) -> str:
        return self.scheduler.address

    def _registry_entry(self) -> dict:
        return {
            "id": self.cluster_id,
            "name": self._name,
            "kind": self.kind,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "scheduler_address": self.scheduler.address,
            "dashboard_port": self.dashboard_port,
            "dashboard_prefix": self.dashboard_prefix,
            "tags": list(self.containers),
            "walltime": getattr(self, "walltime", None),
            "work_dir": self.work_dir,
            "created": getattr(self, "_created_at", time.time()),
            "tls": self._registry_tls(),
        }

    def _registry_tls(self):
        # A TLS scheduler talks only to holders of a certificate its CA signed: the Jupyter
        # server (same user, same host) gets the client's credentials through the registry
        # entry, which only its owner can read. PEM text or file paths, as Security holds them.
        tls = getattr(self, "_tls", None)
        return tls.registry_tls() if tls is not None else None

    def _registry_update(self):
        if getattr(self, "scheduler", None) is None or self.scheduler.status.name != "running":
            return
        try:
            registry.register(self._registry_entry())
        except Exception as e:  # the registry is a convenience: never break the cluster for it
            logger.debug("cluster registry not updated: %s", e)

    def _registry_remove(self):
        try:
            registry.unregister(self.cluster_id)
        except Exception as e:
            logger.debug("cluster registry entry not removed: %s", e)
