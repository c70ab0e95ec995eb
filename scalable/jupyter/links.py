"""Dashboard links a notebook user can open: through jupyter-server-proxy, never the raw port.

The scheduler's dashboard listens on loopback of the machine running the kernel, which the
user's browser usually cannot reach (the login node, behind an SSH port-forward). Jupyter's own
server can: ``{base_url}proxy/{port}/status`` goes through jupyter-server-proxy, behind Jupyter's
token. This module finds ``base_url`` and builds those links. The dashboard itself answers only
under the cluster's secret ``dashboard_prefix`` (see :mod:`scalable.security`), so every link
carries it.

Examples
--------
>>> proxied_link(8787, prefix="/user/me/")
'/user/me/proxy/8787/status'
>>> proxied_link(8787, prefix="/", dashboard_prefix="/s3cr3t")
'/proxy/8787/s3cr3t/status'
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import dask

from .. import config


def under_jupyter() -> bool:
    """Whether this process is a kernel started by a Jupyter server (not a terminal IPython)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


def _server_base_url_from_runtime() -> str | None:
    """``base_url`` of the Jupyter server that started this kernel, if its runtime file is here.

    jupyter_client sets ``JPY_PARENT_PID`` to the server's pid in every kernel it starts; the
    server writes ``jpserver-<pid>.json`` (with ``base_url``) into the Jupyter runtime directory.
    Inside a container that directory may not be visible: then we do not know.
    """
    pid = os.environ.get("JPY_PARENT_PID")
    if not pid:
        return None
    try:
        from jupyter_core.paths import jupyter_runtime_dir
    except ImportError:
        return None
    path = Path(jupyter_runtime_dir()) / f"jpserver-{pid}.json"
    try:
        return json.loads(path.read_text()).get("base_url")
    except (OSError, ValueError):
        return None


def base_url() -> str:
    """The Jupyter server's base URL, ending in ``/``.

    In order: ``scalable.jupyter.base-url`` in the config, ``JUPYTERHUB_SERVICE_PREFIX`` (set by
    JupyterHub), the runtime file of the server that started this kernel, else ``/``.

    Examples
    --------
    >>> base_url()  # doctest: +SKIP
    '/user/me/'
    """
    url = (
        config.get("jupyter.base-url", default=None)
        or os.environ.get("JUPYTERHUB_SERVICE_PREFIX")
        or _server_base_url_from_runtime()
        or "/"
    )
    return url if url.endswith("/") else url + "/"


def proxied_link(
    port, prefix: str | None = None, dashboard_prefix: str | None = None
) -> str | None:
    """``{base_url}proxy/{port}{dashboard_prefix}/status`` (None without a dashboard).

    Examples
    --------
    >>> proxied_link(8787, prefix="/")
    '/proxy/8787/status'
    """
    if not port:
        return None
    prefix = base_url() if prefix is None else prefix
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    return f"{prefix}proxy/{port}{_path(dashboard_prefix)}/status"


def _path(dashboard_prefix) -> str:
    """``"/secret"`` from ``"secret"``, ``"/secret/"`` or ``"/secret"``; ``""`` from nothing."""
    stripped = (dashboard_prefix or "").strip("/")
    return f"/{stripped}" if stripped else ""


def dashboard_link(cluster) -> str | None:
    """The link to show for ``cluster``'s dashboard: proxied under Jupyter, direct otherwise."""
    port = cluster.dashboard_port
    if not port:
        return None
    secret = getattr(cluster, "dashboard_prefix", None)
    if under_jupyter() or config.get("jupyter.base-url", default=None):
        return proxied_link(port, dashboard_prefix=secret)
    return f"http://127.0.0.1:{port}{_path(secret)}/status"


def use_proxied_dashboard_links() -> str:
    """Make Dask itself print proxied links (``distributed.dashboard.link``).

    Dask formats the template with ``{port}``; the base URL is fixed now, as found here.
    Returns the template.
    """
    template = base_url() + "proxy/{port}/status"
    dask.config.set({"distributed.dashboard.link": template})
    return template
