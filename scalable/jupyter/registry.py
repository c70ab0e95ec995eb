"""The per-user registry of live clusters, shared by kernels and the Jupyter server.

Every cluster (``SlurmCluster`` or ``LocalCluster``) writes one small JSON file here when it
starts and removes it when it closes; the Jupyter server extension reads the directory to fill
the Scalable sidebar. The kernel usually runs inside an image with its own ``HOME`` and ``/tmp``
while the server runs on the host, so the kernel launcher binds one host directory into the image
and points ``SCALABLE_REGISTRY_DIR`` at it; both sides then read and write the same files.

Examples
--------
>>> from scalable.jupyter import registry
>>> path = registry.register({"id": "c1", "name": "demo", "scheduler_address": "tcp://127.0.0.1:8786",
...                           "dashboard_port": 8787, "tags": ["gcam"], "kind": "local"})  # doctest: +SKIP
>>> [e["id"] for e in registry.list_clusters()]                  # doctest: +SKIP
['c1']
>>> registry.unregister("c1")
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from ..records import pid_namespace

logger = logging.getLogger(__name__)

ENV_VAR = "SCALABLE_REGISTRY_DIR"

# Cluster ids become file names: keep them to characters that cannot leave the directory.
_ID_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")

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
    data_home = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(data_home) / "scalable" / "registry"


def _ensure_dir() -> Path:
    path = registry_dir()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkdir's mode is masked by the umask and ignored for an existing directory: other users
    # must never read scheduler addresses, so tighten it when we own it.
    if path.stat().st_uid == os.getuid() and (path.stat().st_mode & 0o777) != 0o700:
        os.chmod(path, 0o700)
    return path


def check_id(cluster_id: str) -> str:
    """Return ``cluster_id`` if it is usable as a registry key, else raise ``ValueError``.

    Examples
    --------
    >>> check_id("a1b2")
    'a1b2'
    >>> check_id("../etc")
    Traceback (most recent call last):
    ...
    ValueError: Cluster id '../etc' is not valid: use letters, digits, '_', '.' and '-' (at most 128, not starting with '.' or '-').
    """
    if not isinstance(cluster_id, str) or not _ID_RE.match(cluster_id):
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
    except Exception:  # not a kernel (plain IPython), or no connection file yet
        return None
    match = re.match(r"^kernel-(.+)\.json$", name)
    return match.group(1) if match else None


def register(entry: dict) -> Path:
    """Write ``entry`` (a cluster's description) into the registry; return the file's path.

    ``entry["id"]`` is required. ``pid``, ``host``, ``created``, ``kernel_id`` and ``pidns`` are
    filled in from the calling process when missing. The file is written atomically, readable by
    the owner only.

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
    directory = _ensure_dir()
    path = directory / f"{cluster_id}.json"
    fd, tmp = tempfile.mkstemp(prefix=f".{cluster_id}.", suffix=".tmp", dir=directory)  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(entry, f, default=str)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # readers see the old file or the new one, never half of one
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def unregister(cluster_id: str) -> None:
    """Remove a cluster's entry; a missing entry is not an error.

    Examples
    --------
    >>> unregister("no-such-cluster")
    """
    try:
        (registry_dir() / f"{check_id(cluster_id)}.json").unlink()
    except FileNotFoundError:
        pass


def read_entry(cluster_id: str, directory: str | os.PathLike | None = None) -> dict | None:
    """Return one cluster's entry, or ``None`` when it is not registered.

    ``directory`` overrides :func:`registry_dir` (the server's ``ScalableServer.registry_dir``).
    """
    try:
        with open(Path(directory or registry_dir()) / f"{check_id(cluster_id)}.json") as f:
            return json.load(f)
    except (FileNotFoundError, ValueError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.EPERM  # exists, owned by someone else
    return True


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

    On this host (same hostname and pid namespace) a dead pid settles it; a live pid whose
    scheduler refuses connections means the cluster closed without unregistering. Elsewhere only
    the scheduler's answer counts.
    """
    local = entry.get("host") == socket.gethostname() and entry.get("pidns") in (None, pid_namespace())
    pid = entry.get("pid")
    if local and isinstance(pid, int) and not _pid_alive(pid):
        return False
    address = entry.get("scheduler_address")
    if not address:
        return False
    return _scheduler_answers(address)


def list_clusters(prune: bool = True, directory: str | os.PathLike | None = None) -> list[dict]:
    """Return the registered clusters, oldest first.

    With ``prune=True`` the entries of clusters that no longer run (see :func:`is_alive`) and
    unreadable files are removed instead of returned. ``directory`` overrides
    :func:`registry_dir`.

    Examples
    --------
    >>> [e["id"] for e in list_clusters()]                       # doctest: +SKIP
    ['3f2c9a', '9b1d07']
    """
    directory = Path(directory or registry_dir())
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(".json") and not n.startswith("."))
    except FileNotFoundError:
        return []
    try:
        # the server connects to (and unpickles replies from) what entries name: trust only a
        # directory nobody else can write to, and only files of our own user
        st = os.stat(directory)
        if st.st_uid != os.getuid() or st.st_mode & 0o022:
            logger.warning("cluster registry %s is not private to this user: ignored", directory)
            return []
    except FileNotFoundError:
        return []
    entries = []
    for name in names:
        path = directory / name
        try:
            if os.lstat(path).st_uid != os.getuid():
                continue
            with open(path) as f:
                entry = json.load(f)
            if not isinstance(entry, dict) or entry.get("id") != name[: -len(".json")]:
                raise ValueError(name)
        except FileNotFoundError:
            continue  # unregistered while we listed
        except ValueError:
            if prune:
                path.unlink(missing_ok=True)
            continue
        if prune and not is_alive(entry):
            path.unlink(missing_ok=True)
            continue
        entries.append(entry)
    entries.sort(key=lambda e: (e.get("created") or 0, e["id"]))
    return entries
