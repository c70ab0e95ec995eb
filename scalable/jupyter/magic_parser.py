"""The command line of ``%scalable``: one argparse subcommand per action.

Built on IPython's :class:`~IPython.core.magic_arguments.MagicArgumentParser`, so a mistake raises
:class:`~IPython.core.error.UsageError` (shown without a traceback). Each subcommand carries an
example, and every error message ends by saying what to type.

Examples
--------
>>> args = parse("scale gcam 4", build_parser())
>>> args.command, args.tag, args.n
('scale', 'gcam', 4)
"""

from __future__ import annotations

import argparse
import difflib
import shlex

from IPython.core.error import UsageError
from IPython.core.magic_arguments import MagicArgumentParser


class HelpShown(Exception):
    """``--help`` was asked for and printed: nothing else to do."""


def _formatter(prog):
    return argparse.HelpFormatter(prog, max_help_position=32)


class Parser(MagicArgumentParser):
    """A MagicArgumentParser whose errors say what to type, and whose ``--help`` returns."""

    def __init__(self, *args, example=None, **kwargs):
        # MagicHelpFormatter writes reST for docstrings; users read plain help
        kwargs.setdefault("formatter_class", _formatter)
        super().__init__(*args, **kwargs)
        self.example = example

    def error(self, message):
        if "invalid choice" in message and self.prog == "%scalable":
            word = message.split("'")[1] if "'" in message else ""
            close = difflib.get_close_matches(word, COMMANDS, n=1)
            hint = f"did you mean %scalable {close[0]}? " if close else ""
            raise UsageError(
                f"%scalable has no subcommand {word!r}: {hint}Subcommands: "
                f"{', '.join(COMMANDS)} (%scalable --help tells more)."
            )
        example = f"type e.g. `{self.example}`, or " if self.example else ""
        raise UsageError(f"{self.prog}: {message}; {example}`{self.prog} --help`.")

    def exit(self, status=0, message=None):
        # argparse exits after printing --help; a magic must return instead
        if message:
            raise UsageError(message)
        raise HelpShown()


def _number(cast, ok, problem):
    """An argparse type: ``cast(text)`` if ``ok`` of it, else ``problem`` (a sentence end)."""

    def convert(text):
        try:
            value = cast(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"{text!r} {problem}")
        return value

    return convert


count = _number(int, lambda n: n >= 0, "is not a number of workers (0, 1, 2, ...)")
positive = _number(int, lambda n: n >= 1, "must be a whole number of 1 or more")
seconds = _number(float, lambda s: s > 0, "is not a number of seconds")


# name -> (help, example)
_COMMANDS = {
    "cluster": (
        "create the cluster (Slurm, or local with --local) and bind `cluster` and `client`",
        "%scalable cluster --queue slurm --walltime 02:00:00",
    ),
    "container": (
        "declare the container a tag's workers run in",
        "%scalable container gcam --cpus 4 --memory 8G --bind /data:/data",
    ),
    "containers": ("list the containers", "%scalable containers"),
    "scale": ("set the number of workers of a tag", "%scalable scale gcam 4"),
    "add": ("start more workers of a tag", "%scalable add gcam 2"),
    "remove": ("stop workers of a tag (pending first, then idle)", "%scalable remove gcam 1"),
    "adapt": (
        "scale a tag from its waiting tasks, between a minimum and a maximum",
        "%scalable adapt gcam 0 10",
    ),
    "status": ("per tag: target, pending, running, busy, idle, waiting tasks", "%scalable status"),
    "jobs": ("this cluster's jobs (Slurm jobs, or local worker processes)", "%scalable jobs"),
    "walltime": (
        "show or set the walltime of jobs submitted from now on",
        "%scalable walltime 04:00:00",
    ),
    "dashboard": ("the Dask dashboard link (through Jupyter's proxy)", "%scalable dashboard"),
    "logs": ("the end of the job logs of a tag's workers", "%scalable logs gcam"),
    "close": ("stop every worker and the cluster", "%scalable close"),
    "panel": ("show the cluster's panel (scale buttons, live counts)", "%scalable panel"),
}
COMMANDS = list(_COMMANDS)


def _tag(p, help="container tag, e.g. gcam"):
    p.add_argument("tag", metavar="TAG", help=help)


def _wait(p):
    p.add_argument(
        "--wait",
        action="store_true",
        help="return once the workers are connected (not just submitted)",
    )
    p.add_argument(
        "--timeout",
        type=seconds,
        default=300,
        metavar="SECONDS",
        help="how long --wait waits (default 300)",
    )


def build_parser() -> Parser:
    """The ``%scalable`` parser with all its subcommands."""
    p = Parser(
        prog="%scalable",
        add_help=True,
        description="Manage containers and tagged Dask workers from a notebook. "
        "Start with `%scalable cluster --local` (or --queue for Slurm).",
        epilog="`%%scalable TAG` on the first line of a cell runs the cell on a worker "
        "of TAG. `%scalable SUBCOMMAND --help` tells more.",
    )
    sub = p.add_subparsers(dest="command", metavar="SUBCOMMAND", parser_class=Parser)
    s = {
        name: sub.add_parser(
            name, help=h, description=h[0].upper() + h[1:] + ".", example=ex, add_help=True
        )
        for name, (h, ex) in _COMMANDS.items()
    }

    c = s["cluster"]
    c.add_argument(
        "--local",
        action="store_true",
        help="workers are local processes (no Slurm): the embedded default",
    )
    c.add_argument("--queue", help="Slurm partition (-p)")
    c.add_argument("--account", help="Slurm account (-A)")
    c.add_argument("--walltime", metavar="HH:MM:SS", help="walltime per job")
    c.add_argument("--interface", help="network interface compute nodes reach, e.g. ib0")
    c.add_argument("--work-dir", help="holds containers/ and logs/ (default: current directory)")
    c.add_argument("--runtime", help="container runtime: apptainer or singularity")
    c.add_argument(
        "--prologue",
        action="append",
        metavar="LINE",
        help="shell line run before each worker (repeatable)",
    )
    c.add_argument(
        "--directive",
        action="append",
        metavar="OPTION",
        help="extra #SBATCH option, e.g. --qos=high (repeatable)",
    )
    c.add_argument(
        "--workers-per-job", type=positive, metavar="K", help="pack K workers of a tag into one job"
    )
    c.add_argument("--name", help="cluster name shown in the sidebar")
    c.add_argument("--new", action="store_true", help="close the current cluster, start another")
    c.add_argument(
        "--as",
        dest="cluster_var",
        metavar="NAME",
        help="variable to bind the cluster to (default: cluster)",
    )
    c.add_argument(
        "--client-as",
        dest="client_var",
        metavar="NAME",
        help="variable to bind the client to (default: client)",
    )

    c = s["container"]
    _tag(c)
    c.add_argument(
        "--image",
        "--path",
        dest="image",
        metavar="PATH",
        help="the .sif image (default <work_dir>/containers/TAG_container.sif)",
    )
    c.add_argument("--cpus", type=positive, help="CPUs per worker")
    c.add_argument("--memory", help="memory per worker, e.g. 20G")
    c.add_argument(
        "--bind", action="append", metavar="HOST[:CONTAINER]", help="bind mount (repeatable)"
    )
    c.add_argument(
        "--env",
        action="append",
        metavar="KEY=VALUE",
        help="environment variable inside the container (repeatable)",
    )
    c.add_argument("--queue", help="this tag's own Slurm partition (-p)")
    c.add_argument("--account", help="this tag's own Slurm account (-A)")
    c.add_argument("--walltime", metavar="HH:MM:SS", help="this tag's own walltime per job")
    c.add_argument("--gpus", type=positive, metavar="N", help="GPUs per worker")
    c.add_argument(
        "--directive",
        action="append",
        metavar="OPTION",
        help="extra #SBATCH option for this tag, e.g. --qos=high (repeatable)",
    )
    c.add_argument(
        "--prologue",
        action="append",
        metavar="LINE",
        help="shell line run before this tag's workers (repeatable)",
    )

    for name in ("scale", "add", "remove"):
        _tag(s[name])
        s[name].add_argument("n", metavar="N", type=count, help="number of workers")
    _wait(s["scale"])
    _wait(s["add"])
    a = s["adapt"]
    _tag(a)
    a.add_argument("minimum", metavar="MIN", type=count, nargs="?", help="fewest workers")
    a.add_argument(
        "maximum", metavar="MAX", type=count, nargs="?", help="most workers (default: no limit)"
    )
    a.add_argument("--off", action="store_true", help="stop adapting (workers stay)")
    s["status"].add_argument("tag", metavar="TAG", nargs="?", help="only this tag")
    s["walltime"].add_argument("walltime", metavar="HH:MM:SS", nargs="?", help="the new walltime")
    _tag(s["logs"])
    s["logs"].add_argument("--lines", type=positive, default=50, help="lines per worker")
    return p


def build_cell_parser() -> Parser:
    """The first line of a ``%%scalable TAG`` cell."""
    p = Parser(
        prog="%%scalable",
        add_help=True,
        example="%%scalable gcam",
        description="Run this cell on a worker of TAG; show its output and result.",
    )
    _tag(p, "run the cell on a worker of this tag")
    p.add_argument(
        "--push",
        action="append",
        metavar="NAME",
        help="send this notebook variable along (repeatable)",
    )
    p.add_argument(
        "--timeout", type=seconds, metavar="SECONDS", help="give up after this long (default: wait)"
    )
    return p


def parse(line: str, parser: Parser):
    """Parse a magic line as a shell would (quotes and backslashes group words, so a path
    with spaces is one argument); raises UsageError, or :class:`HelpShown` after printing help.

    Examples
    --------
    >>> parse("container gcam --image '/my models/gcam.sif'", build_parser()).image
    '/my models/gcam.sif'
    """
    try:
        words = shlex.split(line)
    except ValueError as e:  # "No closing quotation", "No escaped character"
        raise UsageError(
            f"{parser.prog}: {e} in {line!r}: close every quote, e.g. "
            f"`%scalable container gcam --image '/my models/gcam.sif'`."
        ) from None
    return parser.parse_args(words)


def split_pairs(items, option, tag) -> dict:
    """``--bind`` values to ``{host: container}``, ``--env`` values to ``{key: value}``.

    Examples
    --------
    >>> split_pairs(["/data:/in", "/scratch"], "--bind", "gcam")
    {'/data': '/in', '/scratch': '/scratch'}
    """
    sep, form, example = (
        (":", "HOST[:CONTAINER]", "/host/data:/data")
        if option == "--bind"
        else ("=", "KEY=VALUE", "OMP_NUM_THREADS=4")
    )
    out = {}
    for item in items or ():
        key, found, value = item.partition(sep)
        if not key or (sep == "=" and not found) or (found and not value):
            raise UsageError(
                f"{option} {item!r} is not of the form {form}"
                f"; type e.g. `%scalable container {tag} {option} {example}`."
            )
        out[key] = value if found else key
    return out
