"""What a command returned, and how it failed: shared by :mod:`scalable.runner` (the one door
to the command line) and :mod:`scalable.relay.client`, which stand on it, not on each other."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

#: Environment variable naming the relay's Unix socket.
RELAY_ENV = "SCALABLE_RELAY"


@dataclass(frozen=True)
class CommandResult:
    """What a finished command returned."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class CommandError(RuntimeError):
    """A command exited non-zero (or could not run at all).

    Examples
    --------
    >>> err = CommandError(["sbatch", "-p", "nope"], 1, "", "invalid partition specified: nope")
    >>> err.returncode
    1
    """

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str):
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        detail = stderr.strip() or stdout.strip() or "(no output)"
        super().__init__(f"`{shlex.join(self.argv)}` failed with exit code {returncode}: {detail}")


class SubmitError(RuntimeError):
    """Slurm refused a submission; the message names the tag, Slurm's words and the command."""


class CommandNotFound(CommandError):
    """The program is neither on ``PATH`` nor reachable through the relay."""

    def __init__(self, argv: Sequence[str]):
        super().__init__(argv, 127, "", "")
        self.args = (
            (
                f"{argv[0]!r} was not found on PATH and no relay is configured: run scalable on a "
                f"host with Slurm's commands, or start the kernel with the Scalable launcher "
                f"(it sets {RELAY_ENV})."
            ),
        )
