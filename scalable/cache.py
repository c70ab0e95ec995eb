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
    to fix it, rather than trusted or silently changed.
"""

from __future__ import annotations

import os
import pickle
import stat
import tempfile
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
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise CacheError(f"the {what} {path} is not a directory (a link or a file is there); "
                         f"remove it, or set scalable.cache.directory to a folder of your own")
    if st.st_uid != os.getuid():
        raise CacheError(f"the {what} {path} belongs to uid {st.st_uid}, not to you; remove it, "
                         f"or set scalable.cache.directory to a folder of your own")
    if st.st_mode & 0o022:
        raise CacheError(f"the {what} {path} can be written by others (mode "
                         f"{stat.S_IMODE(st.st_mode):o}), so its pickles cannot be trusted; "
                         f"run chmod go-w {path}, or set scalable.cache.directory elsewhere")
    return st


def _ensure(path: str) -> None:
    """Create ``path`` (and missing parents) 0700, then check it."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except FileExistsError:
        pass  # a file or a dangling link is in the way: check_private says so
    check_private(path)


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
        if not os.path.isdir(self.directory):
            return None
        check_private(self.directory)
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:  # absent, a link (ELOOP), or a stale handle: a miss
            return None
        try:
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
                    return None
                entry = pickle.load(f)
        except Exception:  # noqa: BLE001  (damaged, replaced while read, or a class this image lacks: a miss)
            return None
        if not isinstance(entry, dict) or entry.get("format") != FORMAT:
            return None
        return entry

    def put(self, key: str, entry: dict) -> None:
        """Store ``entry`` under ``key``: a whole new file, moved into place atomically."""
        _ensure(self.directory)
        shard = os.path.dirname(self._path(key))
        _ensure(shard)
        data = pickle.dumps({**entry, "format": FORMAT, "stored": time.time()}, protocol=pickle.HIGHEST_PROTOCOL)
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=SUFFIX, dir=shard)  # 0600, unique
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path(key))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def _files(self):
        if not os.path.isdir(self.directory):
            return
        check_private(self.directory)
        for shard in sorted(os.listdir(self.directory)):
            folder = os.path.join(self.directory, shard)
            if len(shard) != 2 or not os.path.isdir(folder) or os.path.islink(folder):
                continue
            for name in os.listdir(folder):
                yield os.path.join(folder, name)

    def info(self) -> dict:
        """Entries, their total size in bytes, and leftover temporary files."""
        entries = size = leftovers = 0
        for path in self._files():
            name = os.path.basename(path)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if name.startswith(TMP_PREFIX):
                leftovers += 1
            elif name.endswith(SUFFIX):
                entries += 1
                size += st.st_size
        return {"directory": self.directory, "entries": entries, "bytes": size, "leftovers": leftovers}

    def clear(self) -> int:
        """Remove every entry (and leftover temporary file); return how many entries went."""
        removed = 0
        for path in list(self._files()):
            name = os.path.basename(path)
            if name.endswith(SUFFIX):
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    continue
                removed += not name.startswith(TMP_PREFIX)
        if os.path.isdir(self.directory):
            for shard in os.listdir(self.directory):
                folder = os.path.join(self.directory, shard)
                if len(shard) == 2 and os.path.isdir(folder) and not os.path.islink(folder):
                    try:
                        os.rmdir(folder)
                    except OSError:
                        pass  # a writer just put something there
        return removed

