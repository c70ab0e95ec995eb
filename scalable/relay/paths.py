"""Where the relay lives: its socket directory, its socket and its log, made the OpenSSH way.

On a shared login node other users write ``/tmp``, plant symbolic links and create files where
the relay expects its own. So, like ``ssh-agent``, the relay

- makes a fresh 0700 directory with :func:`tempfile.mkdtemp` when it picks the socket path
  itself (unpredictable, never reused);
- given a path, walks to its directory one component at a time with ``O_NOFOLLOW``, and refuses
  a directory that is a symbolic link, that it does not own or that group or others can write,
  and an ancestor that another user could change (sticky ``/tmp`` is fine), each with a sentence
  saying what to do;
- never changes the permissions of anything it did not create;
- opens its log with ``O_NOFOLLOW`` (0600 when it creates it) and writes only to a regular file
  of its own, with no other name, that nobody else can read, one line per request whatever the
  argv holds;
- removes, when it stops, only the socket it bound, checked by device and inode.

Examples
--------
>>> directory, created = socket_directory(tempfile.mkdtemp())   # doctest: +SKIP
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import stat
import tempfile

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_PICK = "or omit --socket so that the relay makes a private directory of its own"


class RelayError(RuntimeError):
    """The relay cannot start (e.g. an unsafe socket path); the message says what to do."""


def pick_socket_directory() -> str:
    """Make a fresh private directory for a relay that was not told where to listen.

    Under ``$XDG_RUNTIME_DIR`` when it is set, else under :func:`tempfile.gettempdir`
    (``$TMPDIR`` or ``/tmp``): a random name, created 0700, never reused, so nothing another
    user planted can be in the way.
    """
    base = os.environ.get("XDG_RUNTIME_DIR") or None
    if base is not None and not os.path.isdir(base):
        base = None
    return tempfile.mkdtemp(prefix="scalable-relay-", dir=base)


def socket_directory(path: str) -> tuple[str, bool]:
    """Make sure ``path`` is a safe directory for the relay's socket; create it if missing.

    Returns ``(real path, created)``. Ancestors are checked on their real path (``/var/run`` may
    lead to ``/run``); the directory itself must not be a symbolic link.

    Raises
    ------
    RelayError
        With a sentence naming the path, what is wrong with it and what to do.
    """
    path = os.path.abspath(path)
    parent, name = os.path.split(path)
    if not name:
        raise RelayError(
            f"the socket cannot live in {path}; choose a socket path in a directory of yours"
        )
    parent = os.path.realpath(parent)
    parent_fd = _open_ancestors(parent)
    try:
        created = False
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)  # never follows a link: EEXIST, dangling or not
            created = True
        except FileExistsError:
            pass
        real = os.path.join(parent, name)
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            target = _readlink(name, parent_fd)
            raise RelayError(
                f"{real} is a symbolic link (to {target!r}, owned by uid {st.st_uid}); the relay never "
                f"follows one: remove it if you made it and start again, {_PICK}"
            )
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError as e:
            if e.errno in (errno.ELOOP, errno.ENOTDIR):
                raise RelayError(
                    f"{real} exists and is not a directory; remove it or choose another socket path"
                ) from None
            raise
        try:
            _check_own_directory(real, os.fstat(fd))
        finally:
            os.close(fd)
        return real, created
    finally:
        os.close(parent_fd)


def _readlink(name: str, dir_fd: int) -> str:
    try:
        return os.readlink(name, dir_fd=dir_fd)
    except OSError:
        return "?"


def _check_own_directory(path: str, st: os.stat_result) -> None:
    uid = os.getuid()
    if not stat.S_ISDIR(st.st_mode):
        raise RelayError(
            f"{path} exists and is not a directory; remove it or choose another socket path"
        )
    if st.st_uid != uid:
        raise RelayError(
            f"{path} belongs to uid {st.st_uid}, not to you (uid {uid}); choose a socket "
            f"path in a directory of yours, {_PICK}"
        )
    if st.st_mode & 0o022:
        raise RelayError(
            f"{path} can be written by group or others (mode {stat.S_IMODE(st.st_mode):o}), so they "
            f"could replace the relay's socket; choose a directory only you can write "
            f"(mkdir -m 700 DIR), {_PICK}"
        )


def _open_ancestors(real: str) -> int:
    """Open ``real`` (an absolute path without links) one component at a time without following
    links, creating missing components 0700, and check that no other user can change any of
    them: each is owned by root or by us, and writable by others only with the sticky bit."""
    fd = os.open("/", _DIR_FLAGS)
    try:
        _check_ancestor("/", os.fstat(fd))
        so_far = ""
        for part in [p for p in real.split("/") if p]:
            so_far += "/" + part
            try:
                child = _open_or_make(part, fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):  # changed since realpath() looked
                    raise RelayError(
                        f"{so_far} is not a directory (or just became a symbolic link); "
                        f"choose another socket path, {_PICK}"
                    ) from None
                raise
            os.close(fd)
            fd = child
            _check_ancestor(so_far, os.fstat(fd))
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open_or_make(name: str, dir_fd: int) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            pass
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def _check_ancestor(path: str, st: os.stat_result) -> None:
    uid = os.getuid()
    if st.st_uid not in (0, uid):
        raise RelayError(
            f"{path} belongs to uid {st.st_uid}, who could move the relay's socket "
            f"aside; choose a socket path under directories of yours, {_PICK}"
        )
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise RelayError(
            f"{path} can be written by group or others without the sticky bit (mode "
            f"{stat.S_IMODE(st.st_mode):o}), so they could move the relay's socket "
            f"aside; choose a socket path under directories only you can write, {_PICK}"
        )


def clear_stale_socket(path: str) -> None:
    """Remove ``path`` if it is a socket of ours that nobody serves; refuse if a relay answers."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise RelayError(
            f"{path} exists and is not a socket; remove it or choose another socket path"
        )
    if st.st_uid != os.getuid():
        raise RelayError(
            f"{path} belongs to uid {st.st_uid}; remove it or choose another socket path"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError as e:
        if e.errno in (errno.ECONNREFUSED, errno.ENOENT):
            os.unlink(path)
            return
        raise
    else:
        raise RelayError(
            f"a relay is already serving {path}; stop it first or choose another socket path"
        )
    finally:
        probe.close()


def bind_private(listener: socket.socket, path: str) -> tuple[int, int]:
    """Bind ``listener`` at ``path`` as a 0600 socket; return its ``(device, inode)``."""
    old = os.umask(0o177)  # born 0600: no window where others could connect
    try:
        listener.bind(path)
    finally:
        os.umask(old)
    st = os.lstat(path)
    return st.st_dev, st.st_ino


def remove_socket(path: str, identity: tuple[int, int] | None) -> bool:
    """Unlink ``path`` only if it is still the socket we bound (same device and inode)."""
    if identity is None:
        return False
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if (st.st_dev, st.st_ino) != identity:
        return False  # someone else's now (e.g. a relay started after ours): not ours to remove
    os.unlink(path)
    return True


def open_private_log(path: str):
    """Open ``path`` for appending: a regular file of ours that only we can read, never through
    a symbolic link, created 0600. Returns a text file that never fails on odd characters."""
    flags = (
        os.O_WRONLY
        | os.O_APPEND
        | os.O_CREAT
        | os.O_NOFOLLOW
        | os.O_CLOEXEC
        | os.O_NOCTTY
        | os.O_NONBLOCK
    )  # a FIFO planted there fails at once instead of blocking us
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as e:
        if e.errno == errno.ELOOP or os.path.islink(path):  # (EACCES in a sticky directory)
            raise RelayError(
                f"the relay log {path} is a symbolic link; the relay never writes through "
                f"one: remove it or choose another --log-file"
            ) from None
        raise RelayError(
            f"cannot open the relay log {path} ({e.strerror}); choose another --log-file"
        ) from None
    try:
        st = os.fstat(fd)
        problem = None
        if not stat.S_ISREG(st.st_mode):
            problem = "is not a regular file"
        elif st.st_uid != os.getuid():
            problem = f"belongs to uid {st.st_uid}"
        elif st.st_nlink != 1:  # a hard link planted elsewhere to a file of ours
            problem = f"has {st.st_nlink - 1} other name(s) (hard links), so the log could grow into another file"
        elif st.st_mode & 0o077:
            problem = (
                f"can be read or written by group or others (mode {stat.S_IMODE(st.st_mode):o}); "
                f"make it private (chmod 600 {path})"
            )
        if problem:
            raise RelayError(f"the relay log {path} {problem}, or choose another --log-file")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    # backslashreplace: an argv that is not valid text still gets its line in the log
    return open(fd, "a", encoding="utf-8", errors="backslashreplace", buffering=1)


#: control characters shown escaped in the log: an argument holding a newline cannot forge a line
_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(32), 127, 0x85)} | {
    0x2028: "\\u2028",
    0x2029: "\\u2029",
}


class _OneLine(logging.Formatter):
    def formatMessage(self, record):  # tracebacks keep their lines
        return super().formatMessage(record).translate(_ESCAPES)


def request_logger(path: str, name: str):
    """A logger writing to the private log at ``path`` (see :func:`open_private_log`); returns
    ``(logger, stream)``, the stream for the caller to close."""
    stream = open_private_log(path)
    log = logging.getLogger(name)
    log.propagate = False
    log.setLevel(logging.INFO)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_OneLine("%(asctime)s %(message)s"))
    log.addHandler(handler)
    return log, stream
