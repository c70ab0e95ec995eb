"""The one door to the command line.

Every Slurm command scalable issues goes through :func:`run` (or its coroutine twin
:func:`arun`): an argv list, never a shell string. A command found on ``PATH`` runs as a local
subprocess; inside the scalable image, where Slurm lives on the host, it goes through the host
command relay named by ``SCALABLE_RELAY`` (see :mod:`scalable.relay`). Either way a failure raises
:class:`CommandError` carrying the command, exit code, stdout and stderr.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence

# what a command returns and how it fails, shared with the relay client (which the runner
# imports when it relays): defined apart so neither imports the other at load time; re-exported
# here, where callers look
from .command import (
    RELAY_ENV,
    CommandError,
    CommandNotFound,
    CommandResult,
    SubmitError,
)

logger = logging.getLogger(__name__)

__all__ = [
    "RELAY_ENV",
    "CommandError",
    "CommandNotFound",
    "CommandResult",
    "SubmitError",
    "arun",
    "run",
]


def _check_argv(argv: Sequence[str]) -> tuple[str, ...]:
    if isinstance(argv, (str, bytes)):
        raise TypeError("commands are argv lists, e.g. ['squeue', '--me'], never shell strings")
    argv = tuple(str(a) for a in argv)
    if not argv:
        raise ValueError("empty command")
    return argv


def _use_relay(program: str) -> bool:
    if not os.environ.get(RELAY_ENV):
        return False
    found = shutil.which(program)
    if found is None:
        return True
    # inside the kernel the relay's shims are on PATH: talk to the relay directly (~1 ms)
    # rather than start a shim process (~50 ms) that would do the same
    from .relay.shim import is_shim

    return is_shim(found)


def _finish(result: CommandResult, check: bool) -> CommandResult:
    logger.debug("ran %s -> %d", shlex.join(result.argv), result.returncode)
    if check and result.returncode != 0:
        raise CommandError(result.argv, result.returncode, result.stdout, result.stderr)
    return result


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
    check: bool = True,
) -> CommandResult:
    """Run ``argv`` and return its :class:`CommandResult`.

    Parameters
    ----------
    argv : list of str
        Program and arguments. The program is looked up on ``PATH``; if it is missing and
        ``SCALABLE_RELAY`` is set, the host relay runs it instead.
    input : str, optional
        Text sent to the command's stdin (``sbatch`` reads its script from there).
    cwd : str, optional
        Working directory; defaults to the current one.
    timeout : float, optional
        Seconds before the command is killed and :class:`CommandError` raised.
    check : bool
        Raise :class:`CommandError` on a non-zero exit code.

    Examples
    --------
    >>> run(["echo", "hello"]).stdout
    'hello\\n'
    """
    argv = _check_argv(argv)
    if _use_relay(argv[0]):
        from .relay.client import relay_run

        return _finish(relay_run(argv, input=input, cwd=cwd, timeout=timeout), check)
    try:
        proc = subprocess.run(
            argv, input=input, cwd=cwd, timeout=timeout, capture_output=True, text=True
        )
    except FileNotFoundError:
        raise CommandNotFound(argv) from None
    except subprocess.TimeoutExpired as e:
        raise CommandError(argv, -9, _text(e.stdout), f"timed out after {timeout} s") from None
    return _finish(CommandResult(argv, proc.returncode, proc.stdout, proc.stderr), check)


async def arun(
    argv: Sequence[str],
    *,
    input: str | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
    check: bool = True,
) -> CommandResult:
    """Coroutine twin of :func:`run`, for code running on the cluster's event loop."""
    argv = _check_argv(argv)
    if _use_relay(argv[0]):
        from .relay.client import relay_arun

        return _finish(await relay_arun(argv, input=input, cwd=cwd, timeout=timeout), check)
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        raise CommandNotFound(argv) from None
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(input.encode() if input is not None else None), timeout
        )
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise CommandError(argv, -9, "", f"timed out after {timeout} s") from None
    return _finish(
        CommandResult(
            argv, proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")
        ),
        check,
    )


def _text(b) -> str:
    if b is None:
        return ""
    return b.decode(errors="replace") if isinstance(b, bytes) else b
