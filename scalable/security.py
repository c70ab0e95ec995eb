"""Secure by default: no other user of the machine can talk to a cluster or read its dashboard.

A login node is shared, and so is loopback: any local user can connect to any ``127.0.0.1``
port, and on Slurm the scheduler listens on the cluster's network, which every user of the HPC
reaches. Whoever can talk to a Dask scheduler runs code as its owner, and a Dask dashboard shows
task names, worker logs and profiles to whoever asks. scalable starts both ends of every
connection, so it protects them without asking:

**TLS, always.** Each cluster makes temporary certificates (:meth:`Security.temporary`: one key
and a self-signed certificate that is its own CA), and its scheduler, workers and clients accept
only peers holding them (``tls://`` addresses, ``require_encryption``). Workers started as
commands (Slurm jobs, containerized local workers) read them from files, written 0600 into a
directory made for this cluster alone (``mkdir`` 0700 under a fresh random name, never reused,
every step relative to a directory opened without following symbolic links) and removed at
``close()`` and at interpreter exit. For Slurm that directory lives under
``<work_dir>/.scalable/tls``, which compute nodes and images see (the work directory is every
container's home); ``.scalable`` must be a real directory of yours that no one else can write.
A local cluster uses the system's temporary directory (bound into its containers). The Jupyter
server gets the client credentials through the cluster's registry entry, readable by you only.
``security=False`` (or ``scalable.security: false``) opts out with a warning; ``security=True``
and an explicit :class:`distributed.security.Security` keep working (a ``Security`` holding
PEM text is written to files the same way; one naming files is used as is).

**A secret dashboard path.** jupyter-server-proxy's ``/proxy/{port}/`` reaches TCP ports only,
so the dashboard cannot hide behind a Unix socket. Instead the scheduler's HTTP server answers
only under a random prefix (128 bits from :mod:`secrets`): :class:`PrefixGuard` strips it before
Dask routes the request, and answers a bare 404 to every other path (``/``, ``/status``,
``/sitemap.json``, ``/metrics``, ...). Only the registry entry (0600) and the links scalable
shows through Jupyter's authenticated proxy carry it. A token in a cookie or header would not
survive the dashboard's iframes and websockets through the proxy; a path does. Dask's own
``http_prefix`` is not used: with it Bokeh writes root-absolute script URLs (``/<prefix>/static``)
that miss the proxy, while behind the guard every page keeps Dask's relative URLs.

**Workers serve nothing.** A worker's HTTP server (``/metrics``, ``/health``, its own bokeh
pages with profiles and task counts, ``/sitemap.json``) listens on the loopback of a compute
node that other users' jobs share, and anything secret in its command line would be readable by
them in ``ps``. Nothing in scalable reads it (the scheduler's dashboard shows every worker), so
workers run with ``--no-dashboard`` and an empty ``distributed.worker.http.routes``: the port
answers 404 to everything but an empty ``/sitemap.json``. Nannies run no HTTP server at all.
"""

from __future__ import annotations

import copy
import errno
import hmac
import logging
import os
import re
import secrets
import stat
import tempfile
import warnings
import weakref

import tornado.routing
import tornado.web
from distributed.security import Security

from . import config

logger = logging.getLogger(__name__)

#: Dask config (as the worker's environment) that empties a worker's HTTP server.
WORKER_HTTP_ENV = {"DASK_DISTRIBUTED__WORKER__HTTP__ROUTES": "[]"}
#: The same, as config for a :class:`distributed.Nanny` (passed to its worker process).
WORKER_HTTP_CONFIG = {"distributed.worker.http.routes": []}

_PEM_FIELDS = (
    "tls_ca_file",
    "tls_scheduler_cert",
    "tls_scheduler_key",
    "tls_worker_cert",
    "tls_worker_key",
    "tls_client_cert",
    "tls_client_key",
)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: what ClusterSecurity names its directory (``<cluster id>-<12 hex>``) and the files in it
_TLS_DIR_RE = re.compile(r"(?P<id>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})-[0-9a-f]{12}")
_TLS_FILE_RE = re.compile(r"(key|cert)[0-9]+\.pem")


class InsecureClusterWarning(UserWarning):
    """A cluster was made without TLS: anyone who reaches its scheduler runs code as you."""


def dashboard_prefix() -> str:
    """A fresh secret path under which one scheduler serves its dashboard (``/<22 chars>``).

    Examples
    --------
    >>> p = dashboard_prefix()
    >>> p.startswith("/") and len(p) == 23
    True
    """
    return "/" + secrets.token_urlsafe(16)


def _in_memory(value) -> bool:
    return isinstance(value, str) and "\n" in value


def _check_private(fd: int, path: str) -> None:
    st = os.fstat(fd)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        os.close(fd)
        raise ValueError(
            f"{path} holds this cluster's TLS keys, so it must be a directory of yours that "
            f"no one else can write: run `chmod go-w {path}` if it is yours, else remove it "
            f"(scalable recreates it) or choose another work_dir."
        )


def _open_private(name: str, path: str, dir_fd: int | None = None) -> int:
    """Make (or open) directory ``name`` without following a link; it must be private to us."""
    try:
        os.mkdir(name, 0o700, dir_fd=dir_fd)
    except FileExistsError:
        pass
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise ValueError(
                f"{path} is not a directory (a symbolic link or a file): scalable keeps "
                f"TLS keys there, so remove it (scalable makes the directory itself) or "
                f"choose another work_dir."
            ) from None
        raise
    _check_private(fd, path)
    return fd


def tls_parent(work_dir: str) -> tuple[int, str]:
    """Open ``<work_dir>/.scalable/tls``, private to this user; return (fd, path).

    Raises ``ValueError`` with a sentence when ``.scalable`` or ``tls`` is a link, a file,
    another user's, or writable by others.
    """
    top = os.path.join(work_dir, ".scalable")
    fd = _open_private(top, top)
    try:
        return _open_private("tls", os.path.join(top, "tls"), dir_fd=fd), os.path.join(top, "tls")
    finally:
        os.close(fd)


def stale_tls_dirs(work_dir: str, cluster_ids, remove: bool = False) -> list:
    """The private TLS directories under ``<work_dir>/.scalable/tls`` of ``cluster_ids``.

    For the clusters a caller knows are dead (see :mod:`scalable.records`): a process killed
    with SIGKILL never removes its keys. Only what :class:`ClusterSecurity` makes is counted:
    a directory of this user named ``<cluster id>-<12 hex>`` holding nothing but its
    ``key<n>.pem``/``cert<n>.pem`` regular files, reached without following any link, in a
    ``tls`` directory that only this user can write. With ``remove``, those are removed.
    Returns their paths.
    """
    ids = set(cluster_ids)
    top = os.path.join(work_dir, ".scalable")
    path = os.path.join(top, "tls")
    try:
        top_fd = os.open(top, _DIR_FLAGS)
        _check_private(top_fd, top)  # (closes it when it refuses)
        try:
            parent_fd = os.open("tls", _DIR_FLAGS, dir_fd=top_fd)
        finally:
            os.close(top_fd)
        _check_private(parent_fd, path)
    except (OSError, ValueError) as e:  # none, a link, or not private: nothing to trust there
        logger.debug("no stale TLS directories looked for in %s: %s", path, e)
        return []
    found = []
    try:
        for name in sorted(os.listdir(parent_fd)):
            match = _TLS_DIR_RE.fullmatch(name)
            if match and match["id"] in ids and _stale_dir(parent_fd, name, remove):
                found.append(os.path.join(path, name))
    finally:
        os.close(parent_fd)
    return found


def _stale_dir(parent_fd: int, name: str, remove: bool) -> bool:
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError:
        return False  # gone, a link or not a directory: not ours to touch
    try:
        if os.fstat(fd).st_uid != os.getuid():
            return False
        files = os.listdir(fd)
        for file in files:
            st = os.stat(file, dir_fd=fd, follow_symlinks=False)
            if not (_TLS_FILE_RE.fullmatch(file) and stat.S_ISREG(st.st_mode)):
                return False
        if remove:
            for file in files:
                os.unlink(file, dir_fd=fd)
            os.rmdir(name, dir_fd=parent_fd)
        return True
    except OSError as e:
        logger.warning("stale TLS directory %s not removed: %s", name, e)
        return False
    finally:
        os.close(fd)


def _remove(parent_fd: int, name: str, fd: int, files: tuple) -> None:
    # relative to the descriptors opened at creation: nothing is resolved through a path again
    try:
        for file in files:
            try:
                os.unlink(file, dir_fd=fd)
            except FileNotFoundError:
                pass
        os.rmdir(name, dir_fd=parent_fd)
    except OSError as e:
        logger.warning("TLS directory %s not removed: %s", name, e)
    finally:
        os.close(fd)
        os.close(parent_fd)


class ClusterSecurity:
    """One cluster's TLS credentials: in memory, and in files its workers can read.

    Parameters
    ----------
    security : Security
        The credentials (``Security.temporary()`` for the default).
    parent : tuple of (int, str), optional
        Open directory (fd, path) under which a private directory is made for the files; the fd
        is owned (closed) by this object. Default: the system's temporary directory.
    name : str
        Start of the private directory's name (the cluster id, so one can tell whose it is).

    Attributes
    ----------
    original : Security
        As given: the registry entry carries its client credentials.
    security : Security
        What the scheduler, workers and clients use: every PEM field written to a file.
    directory : str or None
        The private directory, while it exists (``None`` when nothing needed writing).
    """

    def __init__(self, security: Security, parent: tuple[int, str] | None = None, name: str = ""):
        self.original = security
        self.security = copy.copy(security)
        self.directory = None
        pem = {f: getattr(security, f) for f in _PEM_FIELDS if _in_memory(getattr(security, f))}
        if parent is None:
            tmp = tempfile.gettempdir()
            parent = (os.open(tmp, _DIR_FLAGS & ~os.O_NOFOLLOW), tmp)
            name = f"scalable-tls-{name}"
        parent_fd, parent_path = parent
        if not pem:
            os.close(parent_fd)
            self._finalizer = None
            return
        for _ in range(100):  # mkdtemp's way: a fresh random name, never an existing directory
            dirname = f"{name}-{secrets.token_hex(6)}".lstrip("-")
            try:
                os.mkdir(dirname, 0o700, dir_fd=parent_fd)
                break
            except FileExistsError:
                continue
        else:
            os.close(parent_fd)
            raise FileExistsError(errno.EEXIST, "no free name for a TLS directory", parent_path)
        fd = os.open(dirname, _DIR_FLAGS, dir_fd=parent_fd)
        os.fchmod(fd, 0o700)  # ours, just made: whatever the umask did, only we may enter
        files = {}  # PEM text -> file name: the temporary cert is also the CA, one file each
        for text in pem.values():
            files.setdefault(text, f"{'key' if 'PRIVATE KEY' in text else 'cert'}{len(files)}.pem")
        self._finalizer = weakref.finalize(
            self, _remove, parent_fd, dirname, fd, tuple(files.values())
        )
        try:
            for text, file in files.items():
                _write_private(fd, file, text)
        except BaseException:
            self._finalizer()
            raise
        self.directory = os.path.join(parent_path, dirname)
        for field, text in pem.items():
            setattr(self.security, field, os.path.join(self.directory, files[text]))

    def worker_args(self) -> list:
        """``dask worker`` options that give a worker started as a command its credentials."""
        tls = self.security.get_tls_config_for_role("worker")
        args = []
        for key in ("ca_file", "cert", "key"):
            if tls.get(key):
                args += [f"--tls-{key.replace('_', '-')}", tls[key]]
        return args

    def registry_tls(self) -> dict | None:
        """Client credentials for the registry entry (PEM text or the user's own paths)."""
        sec = self.original
        if not sec.require_encryption:
            return None
        return {"ca": sec.tls_ca_file, "cert": sec.tls_client_cert, "key": sec.tls_client_key}

    def close(self) -> None:
        """Remove the files and the private directory (also done at interpreter exit)."""
        if self._finalizer is not None:
            self._finalizer()
        self.directory = None


def _write_private(dir_fd: int, name: str, text: str) -> None:
    fd = os.open(
        name,
        os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
        0o600,
        dir_fd=dir_fd,
    )
    with os.fdopen(fd, "w") as f:
        f.write(text)


def resolve(security, where: str, parent=None, name: str = "") -> ClusterSecurity | None:
    """The security a new cluster uses: ``None`` (no TLS) only when asked for.

    Parameters
    ----------
    security : bool, Security or None
        ``None``: ``scalable.security`` from the config (default true). ``True``: temporary
        certificates. ``False``: no TLS, with a warning. A ``Security``: used as given.
    where : str
        Who could reach the scheduler, for the warning ("every machine on ib0").
    parent : callable, optional
        Returns the (fd, path) of the directory to make the private one in; called only when
        files are needed. Default: the system's temporary directory.
    name : str
        Start of the private directory's name.
    """
    if security is None:
        security = bool(config.get("security"))
    if security is False:
        warnings.warn(
            f"security=False: this cluster's scheduler takes plain TCP, and anyone who can "
            f"reach it ({where}) can run code as you.",
            InsecureClusterWarning,
            stacklevel=3,
        )
        return None
    if security is True:
        security = Security.temporary()
    if not isinstance(security, Security):
        raise TypeError(
            f"security={security!r} is not understood: pass True (the default), False, or a "
            f"distributed.security.Security."
        )
    needs_files = any(_in_memory(getattr(security, f)) for f in _PEM_FIELDS)
    return ClusterSecurity(security, parent() if (needs_files and parent) else None, name)


class PrefixGuard(tornado.routing.Router):
    """Serves an HTTP application only under ``prefix``, stripped; other paths get a bare 404.

    Put in front of a Dask server's HTTP application (``http_server.request_callback``), so
    ``/<prefix>/status`` is Dask's ``/status`` and ``/status`` is nothing.
    """

    def __init__(self, application: tornado.web.Application, prefix: str):
        self.application = application
        self.prefix = "/" + prefix.strip("/")

    def find_handler(self, request, **kwargs):
        path = request.path or ""
        # the first segment against the secret in constant time: no timing says how much of
        # a guess was right
        first, _, _ = path.partition("/")[2].partition("/")
        if not hmac.compare_digest(
            first.encode("utf-8", "surrogateescape"), self.prefix[1:].encode()
        ):
            return self.application.get_handler_delegate(
                request, tornado.web.ErrorHandler, {"status_code": 404}
            )
        if path in (self.prefix, self.prefix + "/"):
            # the dashboard's root: Dask would redirect to the root-absolute /status, which
            # misses both the prefix and the proxy; a relative redirect keeps both
            target = "status" if path.endswith("/") else f"{self.prefix.lstrip('/')}/status"
            return self.application.get_handler_delegate(
                request, tornado.web.RedirectHandler, {"url": target}
            )
        if path.startswith(self.prefix + "/"):
            request.path = path[len(self.prefix) :]
            request.uri = request.uri[len(self.prefix) :]
            return self.application.find_handler(request, **kwargs)
        return self.application.get_handler_delegate(
            request, tornado.web.ErrorHandler, {"status_code": 404}
        )


def guard_http_server(server, prefix: str) -> None:
    """Let ``server`` (a Dask node) answer HTTP only under ``prefix``."""
    if prefix and prefix.strip("/") and getattr(server, "http_server", None) is not None:
        server.http_server.request_callback = PrefixGuard(server.http_application, prefix)
