"""The one rule by which scalable believes a small JSON file another process left behind.

Registry entries (read by the Jupyter server, which then connects where they point) and cluster
records (read by ``scalable jobs``/``cleanup``, which then cancel jobs) both come from files in a
directory. On a shared machine anyone may plant files or symbolic links where they can write, so
an entry ``<id>.json`` is believed only when

* its directory is owned by this user and not writable by group or others,
* it is a regular file (checked on the open descriptor; a symbolic link is never followed, not
  even one of this user's),
* it is owned by this user,
* its name is ``<id>.json`` with a valid id and its JSON ``id`` says the same.

Files are written the matching way: a new ``O_EXCL|O_NOFOLLOW`` temporary file, mode 0600, then
renamed over the entry (a rename replaces a planted link instead of writing through it).

Examples
--------
>>> import tempfile
>>> d = tempfile.mkdtemp()
>>> _ = write_json(d, "c1", {"id": "c1", "pid": 1})
>>> read_json(d, "c1")["pid"]
1
>>> valid_id("c1"), valid_id("c1\\n"), valid_id("../c1")
(True, False, False)
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat

# Ids become file names: characters that cannot leave the directory; fullmatch, so no trailing
# newline slips through as it would with ``$``.
ID_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
SUFFIX = ".json"
MAX_BYTES = 1 << 20  # an entry is a few hundred bytes; PEM text makes it a few KiB

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


class Untrusted(ValueError):
    """A file (or directory) that the trust rule refuses; the message says why."""


class Malformed(Untrusted):
    """A regular file of this user in a private directory whose content is not an entry.

    Unlike other refused files it is this user's own: its owner may delete it.
    """


def valid_id(ident) -> bool:
    """Whether ``ident`` is usable as a file name stem (letters, digits, ``_.-``; fullmatch)."""
    return isinstance(ident, str) and ID_RE.fullmatch(ident) is not None


def _check_id(ident) -> str:
    if not valid_id(ident):
        raise Untrusted(
            f"{ident!r} is not a valid id: use letters, digits, '_', '.' and '-' "
            "(at most 128, not starting with '.' or '-')."
        )
    return ident


def open_private_dir(directory: str | os.PathLike) -> int:
    """Open ``directory`` and return its descriptor if only this user can write it.

    Raises ``FileNotFoundError`` when it does not exist and :class:`Untrusted` otherwise.
    The checks run on the opened directory, so swapping the path afterwards changes nothing.
    """
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid():
            raise Untrusted(
                f"{directory} belongs to uid {st.st_uid}, not to this user: nothing in "
                "it is trusted; use a directory of your own."
            )
        if st.st_mode & 0o022:
            raise Untrusted(
                f"{directory} is writable by group or others (mode "
                f"{stat.S_IMODE(st.st_mode):o}): nothing in it is trusted; run "
                f"`chmod go-w {directory}` if only you should write there."
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_at(dir_fd: int, ident: str, where) -> dict:
    name = ident + SUFFIX
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | _NOFOLLOW | _CLOEXEC, dir_fd=dir_fd)
    except OSError as e:
        if isinstance(e, FileNotFoundError):
            raise
        if stat.S_ISLNK(os.lstat(name, dir_fd=dir_fd).st_mode):
            raise Untrusted(f"{where}/{name} is a symbolic link: ignored") from None
        raise Untrusted(f"{where}/{name} cannot be read: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Untrusted(f"{where}/{name} is not a regular file: ignored")
        if st.st_uid != os.getuid():
            raise Untrusted(f"{where}/{name} belongs to uid {st.st_uid}, not to this user: ignored")
        data = os.read(fd, MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_BYTES:
        raise Malformed(f"{where}/{name} is larger than {MAX_BYTES} bytes: ignored")
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        raise Malformed(f"{where}/{name} is not valid JSON: ignored") from None
    if not isinstance(obj, dict) or obj.get("id") != ident:
        raise Malformed(f"{where}/{name} does not describe id {ident!r}: ignored")
    return obj


def read_json(directory: str | os.PathLike, ident: str) -> dict:
    """The entry ``<directory>/<ident>.json`` if the trust rule holds.

    Raises ``FileNotFoundError`` when there is no such entry, :class:`Untrusted` (a sentence)
    when there is one but it is not believed.
    """
    _check_id(ident)
    dir_fd = open_private_dir(directory)
    try:
        return _read_at(dir_fd, ident, directory)
    finally:
        os.close(dir_fd)


def read_all(directory: str | os.PathLike) -> tuple[list[dict], list[Untrusted]]:
    """Every trusted entry of ``directory`` (by name) and the refusal of each other one.

    A missing directory has no entries; an untrusted one has none and one refusal. Each
    refusal's ``ident`` names the file's id (``None`` for the directory).
    """
    try:
        dir_fd = open_private_dir(directory)
    except FileNotFoundError:
        return [], []
    except Untrusted as e:
        e.ident = None
        return [], [e]
    entries, refused = [], []
    try:
        for name in sorted(os.listdir(dir_fd)):
            if not name.endswith(SUFFIX) or name.startswith("."):
                continue
            ident = name[: -len(SUFFIX)]
            try:
                entries.append(_read_at(dir_fd, _check_id(ident), directory))
            except FileNotFoundError:
                continue  # removed while we listed
            except Untrusted as e:
                e.ident = ident
                refused.append(e)
    finally:
        os.close(dir_fd)
    return entries, refused


def write_json(directory: str | os.PathLike, ident: str, obj: dict) -> str:
    """Write ``obj`` as ``<directory>/<ident>.json`` (0600, atomically, through no link).

    ``directory`` must exist and be private (see :func:`open_private_dir`).
    """
    _check_id(ident)
    dir_fd = open_private_dir(directory)
    try:
        tmp = f".{ident}.{secrets.token_hex(8)}.tmp"
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600, dir_fd=dir_fd
        )
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(obj, f, default=str)
                f.flush()
                os.fsync(f.fileno())
            # readers see the old file or the new one, never half of one
            os.replace(tmp, ident + SUFFIX, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except OSError:
                pass
            raise
    finally:
        os.close(dir_fd)
    return os.path.join(directory, ident + SUFFIX)


def remove(directory: str | os.PathLike, ident: str) -> None:
    """Remove ``<directory>/<ident>.json`` (the name only; a link's target is untouched)."""
    try:
        os.unlink(os.path.join(directory, _check_id(ident) + SUFFIX))
    except FileNotFoundError:
        pass


def make_private_dir(directory: str | os.PathLike) -> str:
    """Create ``directory`` (and parents) 0700 if missing; refuse it if others can write it.

    Only a directory created here is chmodded (the umask may have masked mkdir's mode).
    """
    directory = os.fspath(directory)
    parent = os.path.dirname(os.path.abspath(directory))
    # a parent made here (``<work_dir>/.scalable``) is private too: under umask 002 it would be
    # group-writable, and whoever can write it can move the directory below aside
    os.makedirs(parent, mode=0o700, exist_ok=True)
    try:
        os.mkdir(directory, 0o700)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | _NOFOLLOW | _CLOEXEC)
        try:
            os.fchmod(fd, 0o700)
        finally:
            os.close(fd)
    except FileExistsError:
        pass
    os.close(open_private_dir(directory))
    return directory
