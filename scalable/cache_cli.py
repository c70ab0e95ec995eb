"""``scalable cache info|clear``: the @cacheable results of a work directory."""

from __future__ import annotations

import os
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "cache",
        help="show or clear the @cacheable results of a work directory",
        description="The @cacheable store: <work dir>/.scalable/cache, or "
        "scalable.cache.directory.",
    )
    p.set_defaults(func=lambda args: p.print_help() or 2)
    sub = p.add_subparsers(dest="cache_command", metavar="SUBCOMMAND")
    for name, func, text in (
        ("info", _info, "where the cache is, how many entries, how large"),
        ("clear", _clear, "remove every cached result"),
    ):
        s = sub.add_parser(name, help=text, description=text)
        s.add_argument(
            "--work-dir", help="the work directory (default: scalable.work-directory or here)"
        )
        s.add_argument(
            "--directory",
            help="the cache directory (default: scalable.cache.directory "
            "or <work dir>/.scalable/cache)",
        )
        s.set_defaults(func=func)


def _store(args):
    import dask

    from .cache import Store

    work = os.path.abspath(args.work_dir) if args.work_dir else None
    with dask.config.set({"scalable.work-directory": work} if work else {}):
        return Store(args.directory)


def _info(args) -> int:
    from .cache import CacheError

    store = _store(args)
    try:
        facts = store.info()
    except CacheError as e:
        print(f"scalable cache info: {e}", file=sys.stderr)
        return 1
    print(f"directory  {facts['directory']}")
    print(f"entries    {facts['entries']}")
    print(f"size       {facts['bytes'] / 1e6:.1f} MB")
    if facts["leftovers"]:
        print(
            f"leftovers  {facts['leftovers']} unfinished writes (scalable cache clear removes them)"
        )
    return 0


def _clear(args) -> int:
    from .cache import CacheError

    store = _store(args)
    try:
        removed = store.clear()
    except CacheError as e:
        print(f"scalable cache clear: {e}", file=sys.stderr)
        return 1
    print(f"removed {removed} cached results from {store.directory}")
    return 0
