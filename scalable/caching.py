"""``@cacheable``: skip a function call whose result is already known, on any worker of any tag.

The interface is the original scalable's, so its users' code runs unchanged::

    @cacheable(return_type=FileType, data=DirType, year=ValueType)
    def run_model(data, year): ...

The key of a call is a 128-bit BLAKE2b digest (see :mod:`scalable.hashing`) of

* the function's identity (module and qualified name) and its source text (decorators
  included), taken when the function is decorated, so a function sent by value to a worker
  keeps the key it has in the notebook; a function without source (typed at a bare ``python``
  prompt) is keyed by its compiled code instead;
* every argument, defaults included, by name, each hashed as its declared type (or a guessed one):
  files and directories by content, streamed.

Values it closes over or globals it reads are not part of the key (as in the original): pass what
changes the result as an argument. Entries live in the store of :mod:`scalable.cache`, shared by
every worker through the work directory and safe for many writers at once.
"""

from __future__ import annotations

import functools
import inspect
import logging
import warnings

from . import cache as _cache
from .hashing import (
    DirType,
    FileType,
    GenericType,
    ObjectType,
    UtilityType,
    ValueType,
    _field,
    new_hasher,
    wrap,
)

__all__ = [
    "DirType",
    "FileType",
    "GenericType",
    "ObjectType",
    "UtilityType",
    "ValueType",
    "cacheable",
]

logger = logging.getLogger(__name__)


def _code_digest(code) -> bytes:
    h = new_hasher(b"code")
    _field(h, code.co_code)
    _field(h, repr(code.co_names).encode())
    for const in code.co_consts:
        _field(h, _code_digest(const) if inspect.iscode(const) else repr(const).encode())
    return h.digest()


def function_identity(func) -> bytes:
    """Digest of a function's module, qualified name and source (or compiled code)."""
    h = new_hasher(b"function")
    _field(h, str(getattr(func, "__module__", "")).encode())
    _field(h, str(getattr(func, "__qualname__", func.__name__)).encode())
    try:
        _field(h, b"S" + inspect.getsource(func).encode())
    except (OSError, TypeError):
        _field(h, b"C" + _code_digest(func.__code__))
    return h.digest()


def cacheable(
    return_type=None, void=False, recompute=False, store=True, check_output=False, **arg_types
):
    """Cache a function's results by the content of its arguments.

    Parameters
    ----------
    return_type : type, optional
        The result's type: :class:`FileType` or :class:`DirType` results are recomputed when
        their file or directory is gone. Default: guessed.
    void : bool
        The function returns nothing useful: it is not cached and runs every time, as in the
        original.
    recompute : bool
        Always run the function (and store the new result if ``store``).
    store : bool
        Store new results; ``False`` only reads the cache.
    check_output : bool
        Also keep the result's digest and recompute when it no longer matches (a result file
        edited since it was stored). Costs one hash of the result per call.
    **arg_types
        The type of each argument, by name: :class:`FileType`, :class:`DirType`,
        :class:`ValueType`, :class:`ObjectType`, :class:`UtilityType` or a :class:`GenericType`
        subclass of your own. A plain Python type such as ``str`` means :class:`ValueType`.

    Examples
    --------
    The second call with the same arguments is read from the cache (here a private temporary
    one; by default ``<work_dir>/.scalable/cache``, shared by every worker):

    >>> import dask, tempfile
    >>> runs = []
    >>> @cacheable(return_type=ValueType, year=ValueType)
    ... def population(year, scenario="ssp2"):
    ...     runs.append(year)
    ...     return 7.8 + (year - 2020) * 0.05
    >>> with dask.config.set({"scalable.cache.directory": tempfile.mkdtemp()}):
    ...     first, again, other = population(2050), population(2050), population(2060)
    >>> first == again, runs
    (True, [2050, 2060])

    Bare ``@cacheable`` guesses each argument's type:

    >>> @cacheable
    ... def double(x):
    ...     return 2 * x
    >>> with dask.config.set({"scalable.cache.directory": tempfile.mkdtemp()}):
    ...     double(21)
    42
    """
    if callable(return_type) and not isinstance(return_type, type):
        return cacheable()(return_type)  # bare @cacheable

    def decorate(func):
        if void:
            return func
        sig = inspect.signature(func)
        takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        unknown = sorted(set(arg_types) - set(sig.parameters))
        if unknown and not takes_kwargs:
            raise TypeError(
                f"@cacheable gives types for {', '.join(unknown)}, which "
                f"{func.__name__}() does not take; its arguments are "
                f"{', '.join(sig.parameters) or 'none'}"
            )
        identity = function_identity(func)

        def key_of(args, kwargs) -> str:
            bound = sig.bind(*args, **kwargs)
            bound.apply_defaults()
            h = new_hasher(b"call")
            _field(h, identity)
            for name, value in bound.arguments.items():
                _field(h, name.encode())
                _field(h, wrap(value, arg_types.get(name)).digest())
            return h.hexdigest()

        @functools.wraps(func)
        def inner(*args, **kwargs):
            key = key_of(args, kwargs)
            disk = _cache.Store()
            if not recompute:
                entry = disk.get(key)
                if entry is not None and _usable(entry, check_output):
                    logger.debug("cache hit for %s (%s)", func.__qualname__, key)
                    return entry["result"].value
            result = func(*args, **kwargs)
            if store:
                wrapped = wrap(result, return_type)
                entry = {"result": wrapped, "function": f"{func.__module__}.{func.__qualname__}"}
                if check_output:
                    entry["digest"] = wrapped.digest()
                try:
                    disk.put(key, entry)
                except (OSError, pickle_errors()) as e:  # the result is still good: return it
                    warnings.warn(
                        f"the result of {func.__qualname__} was not cached in "
                        f"{disk.directory} ({e})",
                        stacklevel=2,
                    )
            return result

        inner.cache_key = lambda *args, **kwargs: key_of(args, kwargs)
        return inner

    return decorate


def pickle_errors():
    import pickle

    return (pickle.PicklingError, TypeError, AttributeError)


def _usable(entry: dict, check_output: bool) -> bool:
    result = entry.get("result")
    if not isinstance(result, GenericType):
        return False
    try:
        if not result.exists():  # a FileType/DirType result whose file is gone
            return False
        return not check_output or entry.get("digest") in (None, result.digest())
    except (OSError, ValueError):
        return False
