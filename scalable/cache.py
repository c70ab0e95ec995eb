"""The on-disk store behind :func:`scalable.cacheable`: one file per key, written by atomic rename.

Where
    ``scalable.cache.directory`` (config), else ``<work directory>/.scalable/cache``, the work
    directory being ``scalable.work-directory`` or the current directory. Workers of every tag run
    with the work directory as home and current directory, on every node, so they all share one
    cache; a relative ``scalable.cache.directory`` is taken from there too.

How writers stay safe on a shared filesystem
    The cache is written by many workers on several nodes at once, usually over NFS or Lustre.
    SQLite (and so diskcache, which the original used) relies on POSIX byte-range locks, which
    NFS implements badly or not at all and Lustre only with a mount option: databases get
    corrupted or writers hang. This store needs no lock: each entry is its own file
    ``<dir>/<key[:2]>/<key>.pkl``, written in full to a unique temporary name in the same folder
    (``mkstemp``), flushed with ``fsync``, then moved into place with ``os.replace``. A rename
    within one directory is atomic on local filesystems, NFS and Lustre, so a reader sees either
    no entry or a whole one, never half a file; when several workers compute the same key at
    once, each rename replaces the previous whole entry, and one valid entry is left. Their values
    are equal by construction (same function, same source, same inputs). A reader that loses a
    race (the file replaced under it, NFS's stale handle) or finds damage treats it as a miss.
    A writer killed between the two steps leaves a ``.tmp-*`` file, which ``scalable cache clear``
    removes.

Why pickle is safe here
    Values are pickled, and unpickling runs code, so a value is read only from a cache directory
    that is a real directory (not a link) owned by this user and writable by no one else, and
    only from a regular file owned by this user, opened without following links. The directory is
    created 0700; an existing one that others can write is refused with a sentence saying how
    to fix it, rather than trusted or silently changed. The directory, its shard and the entry
    are opened one below the other (``dir_fd``) and checked on the open descriptors: a parent
    that others can write (a shared project directory) may let them swap the path after a check,
    but not what was opened. An entry must also have no other name (a hard link made elsewhere
    to a file of yours that others can write) and no group or other write permission; a FIFO
    there is a miss, not a read that blocks.
"""

from __future__ import annotations

import errno
import os
import pickle
import secrets
import stat
import time

from . import config

SUFFIX = ".pkl"
TMP_PREFIX = ".tmp-"
FORMAT = 1


class CacheError(Exception):
    """The cache directory cannot be trusted or used; the message says what to change."""


def cache_dir(directory: str | None = None) -> str:
    """The cache directory: ``directory``, config ``scalable.cache.directory``, or
    ``<work directory>/.scalable/cache``."""
    work = config.get("work-directory") or os.getcwd()
    chosen = config.get("cache.directory", directory)
    if chosen:
        return os.path.abspath(os.path.join(os.path.expanduser(work), os.path.expanduser(chosen)))
    return os.path.abspath(os.path.join(os.path.expanduser(work), ".scalable", "cache"))


def check_private(path: str, what: str = "cache directory") -> os.stat_result:
    """Raise :class:`CacheError` unless ``path`` is a directory (not a link) owned by this user
    that no one else can write."""
    return _check_stat(path, os.lstat(path), what)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_private(
    path: str,
    name: str | None = None,
    dir_fd: int | None = None,
    create: bool = False,
    what: str = "cache directory",
) -> int:
    """Open the directory ``name`` in ``dir_fd`` (or ``path``) without following a link, creating
    it 0700 if asked, and return its descriptor once :func:`check_private`'s rule holds for it.
    ``FileNotFoundError`` when it is missing and not to be created."""
    target = path if name is None else name
    if create:
        try:
            os.mkdir(target, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            pass
    try:
        fd = os.open(target, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):  # a link or a file is in the way
            _check_stat(path, os.lstat(target, dir_fd=dir_fd), what)
        raise
    try:
        _check_stat(path, os.fstat(fd), what)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_stat(path: str, st: os.stat_result, what: str) -> os.stat_result:
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise CacheError(
            f"the {what} {path} is not a directory (a link or a file is there); "
            f"remove it, or set scalable.cache.directory to a folder of your own"
        )
    if st.st_uid != os.getuid():
        raise CacheError(
            f"the {what} {path} belongs to uid {st.st_uid}, not to you; remove it, "
            f"or set scalable.cache.directory to a folder of your own"
        )
    if st.st_mode & 0o022:
        raise CacheError(
            f"the {what} {path} can be written by others (mode "
            f"{stat.S_IMODE(st.st_mode):o}), so its pickles cannot be trusted; "
            f"run chmod go-w {path}, or set scalable.cache.directory elsewhere"
        )
    return st


def _ensure(path: str) -> int:
    """Create ``path`` (and missing parents) 0700, then open and check it; return its descriptor."""
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    except FileExistsError:
        pass  # a file or a dangling link is in the way: the check below says so
    return _open_private(path, create=True)


def _trusted_entry(st: os.stat_result) -> bool:
    """A regular file of ours with one name that only we can write."""
    return (
        stat.S_ISREG(st.st_mode)
        and st.st_uid == os.getuid()
        and st.st_nlink == 1
        and not st.st_mode & 0o022
    )


class Store:
    """A cache directory of pickled entries, one file per key.

    Parameters
    ----------
    directory : str, optional
        Default: :func:`cache_dir`.

    Examples
    --------
    >>> import tempfile, os
    >>> store = Store(os.path.join(tempfile.mkdtemp(), "cache"))
    >>> store.put("ab" * 16, {"value": 42})
    >>> store.get("ab" * 16)["value"]
    42
    """

    def __init__(self, directory: str | None = None):
        self.directory = cache_dir(directory)

    def _path(self, key: str) -> str:
        return os.path.join(self.directory, key[:2], key + SUFFIX)

    def get(self, key: str):
        """The entry stored under ``key`` (a dict), or ``None`` for a miss."""
        try:
            dir_fd = _open_private(self.directory)
        except FileNotFoundError:
            return None
        try:
            shard_fd = _open_private(
                os.path.join(self.directory, key[:2]), key[:2], dir_fd, what="cache folder"
            )
        except OSError:  # absent, or a stale handle: a miss
            return None
        finally:
            os.close(dir_fd)
        try:
            fd = os.open(
                key + SUFFIX,
                os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                dir_fd=shard_fd,
            )
        except OSError:  # absent, a link (ELOOP), or a stale handle: a miss
            return None
        finally:
            os.close(shard_fd)
        try:
            with os.fdopen(fd, "rb") as f:
                if not _trusted_entry(os.fstat(f.fileno())):
                    return None
                entry = pickle.load(f)
        except Exception:  # noqa: BLE001  (damaged, replaced while read, or a class this image lacks: a miss)
            return None
        if not isinstance(entry, dict) or entry.get("format") != FORMAT:
            return None
        return entry

    def put(self, key: str, entry: dict) -> None:
        """Store ``entry`` under ``key``: a whole new file, moved into place atomically."""
        data = pickle.dumps(
            {**entry, "format": FORMAT, "stored": time.time()}, protocol=pickle.HIGHEST_PROTOCOL
        )
        dir_fd = _ensure(self.directory)
        try:
            shard_fd = _open_private(
                os.path.join(self.directory, key[:2]),
                key[:2],
                dir_fd,
                create=True,
                what="cache folder",
            )
        finally:
            os.close(dir_fd)
        try:
            tmp = f"{TMP_PREFIX}{secrets.token_hex(8)}{SUFFIX}"  # unique, 0600, through no link
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=shard_fd,
            )
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, key + SUFFIX, src_dir_fd=shard_fd, dst_dir_fd=shard_fd)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=shard_fd)
                except OSError:
                    pass
                raise
        finally:
            os.close(shard_fd)

    def delete(self, key: str) -> None:
        try:
            dir_fd = _open_private(self.directory)
        except FileNotFoundError:
            return
        try:
            os.unlink(os.path.join(key[:2], key + SUFFIX), dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        finally:
            os.close(dir_fd)

    def _files(self):
        """``(shard descriptor, name)`` of every file in the shards, which stay open meanwhile."""
        try:
            dir_fd = _open_private(self.directory)
        except FileNotFoundError:
            return
        try:
            for shard in sorted(os.listdir(dir_fd)):
                if len(shard) != 2:
                    continue
                try:
                    shard_fd = _open_private(
                        os.path.join(self.directory, shard), shard, dir_fd, what="cache folder"
                    )
                except (OSError, CacheError):  # gone, a file, a link, or not ours: not a shard
                    continue
                try:
                    for name in os.listdir(shard_fd):
                        yield shard_fd, name
                finally:
                    os.close(shard_fd)
        finally:
            os.close(dir_fd)

    def info(self) -> dict:
        """Entries, their total size in bytes, and leftover temporary files."""
        entries = size = leftovers = 0
        for shard_fd, name in self._files():
            try:
                st = os.lstat(name, dir_fd=shard_fd)
            except FileNotFoundError:
                continue
            if name.startswith(TMP_PREFIX):
                leftovers += 1
            elif name.endswith(SUFFIX):
                entries += 1
                size += st.st_size
        return {
            "directory": self.directory,
            "entries": entries,
            "bytes": size,
            "leftovers": leftovers,
        }

    def clear(self) -> int:
        """Remove every entry (and leftover temporary file); return how many entries went."""
        removed = 0
        for shard_fd, name in self._files():
            if name.endswith(SUFFIX):
                try:
                    os.unlink(name, dir_fd=shard_fd)
                except FileNotFoundError:
                    continue
                removed += not name.startswith(TMP_PREFIX)
        try:
            dir_fd = _open_private(self.directory)
        except FileNotFoundError:
            return removed
        try:
            for shard in os.listdir(dir_fd):
                if len(shard) == 2:
                    try:
                        os.rmdir(shard, dir_fd=dir_fd)  # a link or a file is not removed by rmdir
                    except OSError:
                        pass  # a writer just put something there
        finally:
            os.close(dir_fd)
        return removed
