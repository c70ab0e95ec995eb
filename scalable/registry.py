"""The per-user registry of live clusters, shared by kernels and the Jupyter server.

Every cluster (``SlurmCluster`` or ``LocalCluster``) writes one small JSON file here when it
starts and removes it when it closes; the Jupyter server extension reads the directory to fill
the Scalable sidebar. The kernel usually runs inside an image with its own ``HOME`` and ``/tmp``
while the server runs on the host, so the kernel launcher binds one host directory into the image
and points ``SCALABLE_REGISTRY_DIR`` at it; both sides then read and write the same files.

Examples
--------
>>> from scalable import registry
>>> path = registry.register({"id": "c1", "name": "demo", "scheduler_address": "tcp://127.0.0.1:8786",
...                           "dashboard_port": 8787, "tags": ["gcam"], "kind": "local"})  # doctest: +SKIP
>>> [e["id"] for e in registry.list_clusters()]                  # doctest: +SKIP
['c1']
>>> registry.unregister("c1")
"""

from __future__ import annotations

import logging
import os
import re
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

from . import trust
from .records import pid_alive, pid_namespace, process_start

logger = logging.getLogger(__name__)

ENV_VAR = "SCALABLE_REGISTRY_DIR"

# How long a liveness probe waits for a scheduler that is on another host (or whose pid we
# cannot check) before the entry counts as dead.
PROBE_TIMEOUT = 1.0


def registry_dir() -> Path:
    """Return the registry directory (not created).

    ``$SCALABLE_REGISTRY_DIR`` if set, else ``$XDG_DATA_HOME/scalable/registry``, else
    ``~/.local/share/scalable/registry``.

    Examples
    --------
    >>> import os
    >>> os.environ["SCALABLE_REGISTRY_DIR"] = "/tmp/reg"
    >>> str(registry_dir())
    '/tmp/reg'
    >>> del os.environ["SCALABLE_REGISTRY_DIR"]
    """
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        return Path(explicit).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(data_home) / "scalable" / "registry"


def check_id(cluster_id: str) -> str:
    r"""Return ``cluster_id`` if it is usable as a registry key, else raise ``ValueError``.

    Examples
    --------
    >>> check_id("a1b2")
    'a1b2'
    >>> check_id("../etc")
    Traceback (most recent call last):
    ...
    ValueError: Cluster id '../etc' is not valid: use letters, digits, '_', '.' and '-' (at most 128, not starting with '.' or '-').
    >>> check_id("a1b2\n")
    Traceback (most recent call last):
    ...
    ValueError: Cluster id 'a1b2\n' is not valid: use letters, digits, '_', '.' and '-' (at most 128, not starting with '.' or '-').
    """
    if not trust.valid_id(cluster_id):
        raise ValueError(
            f"Cluster id {cluster_id!r} is not valid: use letters, digits, '_', '.' and '-' "
            "(at most 128, not starting with '.' or '-')."
        )
    return cluster_id


def _kernel_id() -> str | None:
    """The id of the IPython kernel this process runs, if it is one (never imports ipykernel)."""
    import sys

    if "ipykernel" not in sys.modules:
        return None
    try:
        from ipykernel.connect import get_connection_file

        name = os.path.basename(get_connection_file())
    except Exception:  # noqa: BLE001 -- not a kernel (plain IPython), or no connection file yet
        return None
    match = re.match(r"^kernel-(.+)\.json$", name)
    return match.group(1) if match else None


def register(entry: dict) -> Path:
    """Write ``entry`` (a cluster's description) into the registry; return the file's path.

    ``entry["id"]`` is required. ``pid``, ``host``, ``created``, ``kernel_id`` and ``pidns`` are
    filled in from the calling process when missing. The file is written atomically, readable by
    the owner only, into a directory only the owner can write (else ``ValueError``).

    Examples
    --------
    >>> path = register({"id": "abc", "name": "demo", "scheduler_address": "tcp://127.0.0.1:1",
    ...                  "dashboard_port": 8787, "tags": [], "kind": "local"})  # doctest: +SKIP
    """
    entry = dict(entry)
    cluster_id = check_id(entry.get("id"))
    entry.setdefault("pid", os.getpid())
    entry.setdefault("host", socket.gethostname())
    entry.setdefault("created", time.time())
    entry.setdefault("kernel_id", _kernel_id())
    entry.setdefault("pidns", pid_namespace())
    entry.setdefault("pid_start", process_start(entry["pid"]))
    # the entry may carry TLS credentials: only into a directory nobody else can read or write
    directory = trust.make_private_dir(registry_dir())
    path = Path(trust.write_json(directory, cluster_id, entry))
    return path


def unregister(cluster_id: str) -> None:
    """Remove a cluster's entry; a missing entry is not an error.

    Examples
    --------
    >>> unregister("no-such-cluster")
    """
    trust.remove(registry_dir(), check_id(cluster_id))


def read_entry(cluster_id: str, directory: str | os.PathLike | None = None) -> dict | None:
    """Return one cluster's entry, or ``None`` when it is not registered or not trusted.

    ``directory`` overrides :func:`registry_dir` (the server's ``ScalableServer.registry_dir``).
    Every reader goes through :mod:`scalable.trust`: an entry another user could have written
    or redirected is never returned.
    """
    try:
        return trust.read_json(directory or registry_dir(), check_id(cluster_id))
    except FileNotFoundError:
        return None
    except ValueError as e:  # an invalid id, or an entry the trust rule refuses
        logger.warning("cluster registry: %s", e)
        return None


def _scheduler_answers(address: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """True when something accepts TCP connections at a ``tcp://``/``tls://`` address."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme not in ("tcp", "tls") or parts.port is None:
        return True  # inproc/ucx/...: cannot probe from here, so keep the entry
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout):
            return True
    except OSError:
        return False


def is_alive(entry: dict) -> bool:
    """Whether a registered cluster still runs.

    On this host (same hostname and pid namespace) a dead pid (or one reused by a process that
    started later) settles it; a live pid whose
    scheduler refuses connections means the cluster closed without unregistering. Elsewhere only
    the scheduler's answer counts.
    """
    local = entry.get("host") == socket.gethostname() and entry.get("pidns") in (
        None,
        pid_namespace(),
    )
    pid = entry.get("pid")
    if local and isinstance(pid, int) and not pid_alive(pid, entry.get("pid_start")):
        return False
    address = entry.get("scheduler_address")
    if not address:
        return False
    return _scheduler_answers(address)


def list_clusters(prune: bool = True, directory: str | os.PathLike | None = None) -> list[dict]:
    """Return the registered clusters, oldest first.

    Only entries the trust rule of :mod:`scalable.trust` accepts are returned; others are
    logged and left alone. With ``prune=True`` the entries of clusters that no longer run (see
    :func:`is_alive`) and this user's own unreadable files are removed instead of returned. ``directory`` overrides
    :func:`registry_dir`.

    Examples
    --------
    >>> [e["id"] for e in list_clusters()]                       # doctest: +SKIP
    ['3f2c9a', '9b1d07']
    """
    directory = Path(directory or registry_dir())
    found, refused = trust.read_all(directory)
    for why in refused:
        logger.warning("cluster registry: %s", why)
        # only our own unreadable files go; what another user made or a link is left alone
        if prune and isinstance(why, trust.Malformed):
            trust.remove(directory, why.ident)
    entries = []
    for entry in found:
        if prune and not is_alive(entry):
            trust.remove(directory, entry["id"])
            continue
        entries.append(entry)
    entries.sort(key=lambda e: (e.get("created") or 0, e["id"]))
    return entries
