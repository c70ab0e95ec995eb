"""The ``scalable`` command. Each subcommand lives in its own module, which provides
``register(subparsers)`` and sets ``func`` on its parser; this file only dispatches."""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

#: subcommand modules, in the order ``scalable --help`` lists them
COMMANDS = [
    "scalable.demo",
    "scalable.jobs_cli",
    "scalable.cache_cli",
    "scalable.relay.cli",
    "scalable.kernel.cli",
    "scalable.kernel.python_cli",
    "scalable.bootstrap.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scalable",
        description="Run functions inside model containers on tagged Dask workers on Slurm.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                continue  # that part of scalable is not built yet
            raise
        module.register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from .containers import ContainerError
    from .runner import CommandError

    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        return 130
    except (CommandError, ContainerError) as e:  # a sentence for the user, not a traceback
        print(f"scalable {args.command}: {e}", file=sys.stderr)
        return 1


def bootstrap_main(argv=None) -> int:
    """``scalable_bootstrap``, the original's command: the same as ``scalable bootstrap``."""
    return main(["bootstrap", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
