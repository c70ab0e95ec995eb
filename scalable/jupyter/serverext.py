"""The Jupyter server extension: registers the Scalable REST routes.

Enabled on install by ``jupyter-config/server-config/scalable.json`` (copied to
``etc/jupyter/jupyter_server_config.d/``). Settings are traitlets::

    # jupyter_server_config.py
    c.ScalableServer.registry_dir = "/scratch/ada/scalable-registry"   # yours, 0700
    c.ScalableServer.status_timeout = 5
    c.ScalableServer.status_cache_seconds = 2

Examples
--------
.. code-block:: bash

    jupyter server extension list        # scalable.jupyter.serverext enabled, OK
"""

from __future__ import annotations

from traitlets import Float, Unicode
from traitlets.config import Configurable

from .actions import action_routes
from .handlers import StatusCache, routes


class ScalableServer(Configurable):
    """Settings of the Scalable server extension."""

    registry_dir = Unicode(
        None,
        allow_none=True,
        help="Directory of the cluster registry. Default: $SCALABLE_REGISTRY_DIR, else "
        "$XDG_DATA_HOME/scalable/registry (~/.local/share/scalable/registry). Kernels must "
        "write to the same directory (the Scalable kernel launcher binds it into the image). "
        "It must be owned by this user and not writable by group or others, else no entry in "
        "it is trusted (see scalable.trust).",
    ).tag(config=True)

    status_timeout = Float(
        3.0,
        help="Seconds to wait for a cluster's scheduler to answer before showing it as unreachable.",
    ).tag(config=True)

    scale_timeout = Float(
        60.0,
        help="Seconds to wait for a cluster to accept a new target from the sidebar's - / + buttons.",
    ).tag(config=True)

    status_cache_seconds = Float(
        2.0,
        help="Open sidebars share a cluster's status for this long, so many browser tabs cost a "
        "Slurm cluster one squeue per period, not one per tab.",
    ).tag(config=True)


def _load_jupyter_server_extension(serverapp):
    """Add the routes under ``{base_url}scalable/``."""
    web_app = serverapp.web_app
    config = ScalableServer(parent=serverapp)
    web_app.settings["scalable_config"] = config
    web_app.settings["scalable_status_cache"] = StatusCache(config.status_cache_seconds)
    web_app.add_handlers(
        ".*$", routes(web_app.settings["base_url"]) + action_routes(web_app.settings["base_url"])
    )
    serverapp.log.info("scalable: REST routes under %sscalable/", web_app.settings["base_url"])


# The name jupyter_server looked for before 2.0, kept for tools that still call it.
load_jupyter_server_extension = _load_jupyter_server_extension
