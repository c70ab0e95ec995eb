"""The programs the host relay will run: bare names on an allowlist, found on the host PATH.

A request names its program as ``argv[0]``. Only a bare name that is on the allowlist is run,
resolved through the host's ``PATH`` (never a path, never shell syntax); anything else is
:class:`Refused` with a sentence that says what to change.

Examples
--------
>>> Programs(["squeue"]).resolve("squeue; rm -rf ~")
Traceback (most recent call last):
...
scalable.relay.allowlist.Refused: 'squeue; rm -rf ~' looks like shell syntax; the relay runs one program with an argv list, e.g. ['squeue', '--me'], never a shell command
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable

from .paths import RelayError

DEFAULT_ALLOWLIST = ("sbatch", "squeue", "scancel", "sinfo", "scontrol", "sacct")
#: a program name the relay will even consider: a bare name, no path, no shell syntax
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
_SHELLISH = set(" \t\n;&|<>()$`\\\"'*?[]{}~#!=")


class Refused(Exception):
    """A request the relay will not run; the message is a sentence for the user."""

    def __init__(self, message: str, returncode: int = 126):
        super().__init__(message)
        self.returncode = returncode


class Programs:
    """The allowlist, and where each of its programs is on the host (looked up once).

    Parameters
    ----------
    allowlist : iterable of str
        Program names that may run; each must be a bare name such as ``'squeue'``.
    """

    def __init__(self, allowlist: Iterable[str]):
        self.allowlist = frozenset(allowlist)
        bad = sorted(n for n in self.allowlist if not _NAME.match(n))
        if bad:
            raise RelayError(
                f"relay allowlist entries {bad} are not bare program names; list names like 'squeue'"
            )
        self._paths: dict[str, str | None] = {}  # name -> path on the host PATH

    def resolve(self, name: str) -> str:
        """The host path of the program ``name``, or :class:`Refused` with what to change."""
        if "/" in name:
            raise Refused(
                f"the relay runs programs by bare name from the host PATH; use {os.path.basename(name)!r}, not the path {name!r}"
            )
        if _SHELLISH & set(name) or not _NAME.match(name):
            raise Refused(
                f"{name!r} looks like shell syntax; the relay runs one program with an argv list, "
                f"e.g. ['squeue', '--me'], never a shell command"
            )
        if name not in self.allowlist:
            raise Refused(
                f"{name!r} is not allowed through the relay (allowed: {', '.join(sorted(self.allowlist))}); "
                f"add it to scalable.relay.allowlist in the host's scalable.yaml if it is safe"
            )
        path = self._paths.get(name)
        if path is None or not os.access(path, os.X_OK):  # cached: a PATH search costs ~0.1 ms
            path = self._paths[name] = shutil.which(name)
        if path is None:
            raise Refused(
                f"{name!r} is allowed but not found on the host's PATH; load Slurm (e.g. module load slurm) before starting the relay",
                127,
            )
        return path
