"""Content hashes for :func:`scalable.cacheable`: the argument types and the streaming hashers.

Every digest is 128 bits of BLAKE2b (``hashlib.blake2b(digest_size=16)``, standard library): at
a million cached calls the chance that two keys collide is about 1e-27, where the original's
32-bit ``xxh32`` made a collision likely after some 77,000 entries. Files are read in fixed-size
chunks (model outputs are gigabytes; nothing is read whole) and directories are hashed as their
sorted relative paths with each file's content, so a renamed, added, removed or edited file
changes the digest, and the same tree seen through another bind path in another container does
not.

The argument types are the original's: pass them by keyword to :func:`~scalable.cacheable`
(``@cacheable(return_type=FileType, data=DirType, year=ValueType)``); an argument without a type
is recognised by :func:`convert_to_type`. A custom type is a :class:`GenericType` subclass that
overrides :meth:`GenericType.digest`.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import stat

DIGEST_SIZE = 16
#: bytes read at a time from a file: large enough for the disk, small enough for any worker
CHUNK = 1 << 20


def new_hasher(kind: bytes = b""):
    """A 128-bit BLAKE2b hasher; ``kind`` separates the hash domains (file, value, ...)."""
    h = hashlib.blake2b(digest_size=DIGEST_SIZE)
    h.update(len(kind).to_bytes(2, "big") + kind)
    return h


def _field(h, data: bytes) -> None:
    # Length-prefixed, so ("ab", "c") and ("a", "bc") never hash alike.
    h.update(len(data).to_bytes(8, "big"))
    h.update(data)


def file_digest(path: str | os.PathLike, *, chunk: int = CHUNK) -> bytes:
    """Digest of a file's content, read ``chunk`` bytes at a time (no name: see :class:`FileType`)."""
    h = new_hasher(b"file-content")
    with open(path, "rb") as f:
        buf = bytearray(chunk)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.digest()


def dir_digest(path: str | os.PathLike) -> bytes:
    """Digest of a directory tree: its sorted relative paths, each file's content, each link's target.

    Symbolic links are hashed as links (their target text), never followed, so a link cycle
    cannot loop and a link out of the tree does not pull in what it points to.
    """
    root = os.fspath(path)
    entries = []
    for top, dirs, files in os.walk(root, followlinks=False):
        rel = os.path.relpath(top, root)
        for name in dirs + files:
            entries.append(os.path.normpath(os.path.join(rel, name)))
    h = new_hasher(b"dir")
    for rel in sorted(entries):
        full = os.path.join(root, rel)
        st = os.lstat(full)
        _field(h, os.fsencode(rel))
        if stat.S_ISLNK(st.st_mode):
            _field(h, b"L" + os.fsencode(os.readlink(full)))
        elif stat.S_ISDIR(st.st_mode):
            _field(h, b"D")
        elif stat.S_ISREG(st.st_mode):
            _field(h, b"F" + file_digest(full))
        else:  # fifos and devices: their name only, never read
            _field(h, b"O")
    return h.digest()


class GenericType:
    """Base of the argument types: wraps a value and gives its 128-bit :meth:`digest`.

    Parameters
    ----------
    value : Any
        The argument (or return value) to hash.

    Examples
    --------
    A type of your own hashes what decides the result, e.g. a model run's configuration name
    only, not the whole object:

    >>> class RunName(GenericType):
    ...     def digest(self):
    ...         return ValueType(self.value["name"]).digest()
    >>> RunName({"name": "ssp245", "log": 1}) == RunName({"name": "ssp245", "log": 2})
    True
    >>> len(GenericType([1, 2]).digest())
    16
    """

    def __init__(self, value):
        self.value = value

    def digest(self) -> bytes:
        """16 bytes that change whenever the value does. Subclasses override this."""
        if type(self).__hash__ is not GenericType.__hash__:
            # A custom type written for the original, which defined only __hash__.
            return _int_digest(hash(self))
        return ObjectType(self.value).digest()

    def exists(self) -> bool:
        """Whether a cached value of this type is still usable (files: still there)."""
        return True

    def __hash__(self) -> int:
        return int.from_bytes(self.digest()[:8], "big")

    def __eq__(self, other):
        return type(self) is type(other) and self.digest() == other.digest()


def _int_digest(n: int) -> bytes:
    h = new_hasher(b"int-hash")
    _field(h, str(n).encode())
    return h.digest()


class FileType(GenericType):
    """A path to a file, hashed by its name (not its folder) and its content, streamed.

    Moving the work directory, or seeing the file through another bind path, keeps the digest;
    editing or renaming the file changes it.

    Examples
    --------
    >>> import os, tempfile
    >>> a, b = tempfile.mkdtemp(), tempfile.mkdtemp()
    >>> for folder in (a, b):
    ...     with open(os.path.join(folder, "gdp.csv"), "w") as f:
    ...         _ = f.write("year,gdp 2020,1.0")
    >>> FileType(os.path.join(a, "gdp.csv")) == FileType(os.path.join(b, "gdp.csv"))
    True
    >>> with open(os.path.join(b, "gdp.csv"), "a") as f:
    ...     _ = f.write(" 2030,1.3")
    >>> FileType(os.path.join(a, "gdp.csv")) == FileType(os.path.join(b, "gdp.csv"))
    False
    >>> FileType(os.path.join(a, "missing.csv")).exists()
    False
    """

    def digest(self) -> bytes:
        path = os.fspath(self.value)
        if not os.path.isfile(path):
            raise ValueError(
                f"FileType argument {path!r} is not a file; pass an existing file "
                f"or declare the argument with another type (e.g. ValueType)"
            )
        h = new_hasher(b"file")
        _field(h, os.fsencode(os.path.basename(path)))
        _field(h, file_digest(path))
        return h.digest()

    def exists(self) -> bool:
        return os.path.isfile(os.fspath(self.value))


class DirType(GenericType):
    """A path to a directory, hashed by its name and its whole tree (see :func:`dir_digest`).

    Examples
    --------
    >>> import os, tempfile
    >>> data = os.path.join(tempfile.mkdtemp(), "inputs")
    >>> os.mkdir(data)
    >>> before = DirType(data).digest()
    >>> with open(os.path.join(data, "a.txt"), "w") as f:
    ...     _ = f.write("new file")
    >>> DirType(data).digest() == before, DirType(data).exists()
    (False, True)
    """

    def digest(self) -> bytes:
        path = os.fspath(self.value)
        if not os.path.isdir(path):
            raise ValueError(
                f"DirType argument {path!r} is not a directory; pass an existing "
                f"directory or declare the argument with another type (e.g. ValueType)"
            )
        h = new_hasher(b"dirtype")
        _field(h, os.fsencode(os.path.basename(os.path.normpath(path))))
        _field(h, dir_digest(path))
        return h.digest()

    def exists(self) -> bool:
        return os.path.isdir(os.fspath(self.value))


class ValueType(GenericType):
    """A plain value (``str``, ``int``, ``float``, ``bool``, ``bytes``, ``None``), hashed with its type.

    Unlike the original, ``1``, ``1.0``, ``True`` and ``"1"`` are four different keys.

    Examples
    --------
    >>> ValueType(2050) == ValueType(2050), ValueType(1) == ValueType(1.0)
    (True, False)
    """

    def digest(self) -> bytes:
        v = self.value
        h = new_hasher(b"value")
        _field(h, type(v).__qualname__.encode())
        if isinstance(v, bytes):
            _field(h, v)
        elif isinstance(v, (str, int, float, bool, complex)) or v is None:
            _field(h, repr(v).encode())
        else:  # as the original: its text
            _field(h, str(v).encode())
        return h.digest()


class ObjectType(GenericType):
    """A container (``list``, ``tuple``, ``dict``, ``set``) hashed element by element, each element
    by its own recognised type; any other object by its pickle.

    Examples
    --------
    >>> ObjectType({"a": 1, "b": [2, 3]}) == ObjectType({"b": [2, 3], "a": 1})
    True
    >>> ObjectType([1, 2]) == ObjectType((1, 2))
    False
    """

    def digest(self) -> bytes:
        v = self.value
        h = new_hasher(b"object")
        _field(h, type(v).__qualname__.encode())
        if isinstance(v, (list, tuple)):
            for item in v:
                _field(h, convert_to_type(item).digest())
        elif isinstance(v, dict):
            pairs = sorted(
                (convert_to_type(k).digest(), convert_to_type(x).digest()) for k, x in v.items()
            )
            for k, x in pairs:
                _field(h, k + x)
        elif isinstance(v, (set, frozenset)):
            for d in sorted(convert_to_type(x).digest() for x in v):
                _field(h, d)
        else:
            _field(h, pickle.dumps(v, protocol=4))
        return h.digest()


class UtilityType(GenericType):
    """A data object: a NumPy array (dtype, shape and bytes) or a pandas object (its pickle).

    As in the original, this type is part of the key; it exists so that arrays and frames are
    hashed by their data rather than as generic objects.

    Examples
    --------
    >>> import array
    >>> UtilityType(array.array("d", [1.0, 2.0])) == UtilityType(array.array("d", [1.0, 2.0]))
    True
    """

    def digest(self) -> bytes:
        v = self.value
        h = new_hasher(b"utility")
        _field(h, f"{type(v).__module__}.{type(v).__qualname__}".encode())
        if type(v).__module__.split(".")[0] == "numpy" and hasattr(v, "tobytes"):
            _field(h, str(v.dtype).encode() + repr(getattr(v, "shape", ())).encode())
            _field(h, v.tobytes(order="C"))
        else:
            _field(h, pickle.dumps(v, protocol=4))
        return h.digest()


def convert_to_type(value) -> GenericType:
    """Wrap an argument whose type was not declared, guessing as the original did.

    A ``str`` or path naming an existing file is a :class:`FileType`, an existing directory a
    :class:`DirType`; other plain values are :class:`ValueType`; NumPy and pandas objects are
    :class:`UtilityType`; everything else is :class:`ObjectType`. Declare the type to be sure.

    Examples
    --------
    >>> type(convert_to_type(2020)).__name__
    'ValueType'
    >>> type(convert_to_type({"a": [1, 2]})).__name__
    'ObjectType'
    """
    if isinstance(value, GenericType):
        return value
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        if isinstance(path, str) and path:
            if os.path.isfile(path):
                return FileType(value)
            if os.path.isdir(path):
                return DirType(value)
        return ValueType(value)
    if value is None or isinstance(value, (int, float, bool, bytes, complex)):
        return ValueType(value)
    if type(value).__module__.split(".")[0] in ("numpy", "pandas"):
        return UtilityType(value)
    return ObjectType(value)


def wrap(value, declared) -> GenericType:
    """Wrap ``value`` in its declared type; a plain Python type (``str``, ``int``, as the original's
    README writes ``param=str``) means :class:`ValueType`; nothing declared means a guess."""
    if declared is None:
        return convert_to_type(value)
    if isinstance(declared, type) and issubclass(declared, GenericType):
        return declared(value)
    return ValueType(value)
