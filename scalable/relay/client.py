"""The container side of the relay, behind :func:`scalable.runner.run`.

:func:`scalable.runner.run` calls :func:`relay_run` when a program is missing locally and
``SCALABLE_RELAY`` names the relay's socket, so code inside the image issues Slurm commands
exactly as on the host. A non-zero exit comes back as a :class:`~scalable.runner.CommandResult`
(the runner decides whether to raise); a relay that cannot be reached, a refused request or a
timeout raise :class:`~scalable.runner.CommandError`, as a local failure would.

Before sending anything the client checks that its own uid serves the socket (``SO_PEERCRED``):
a path can be planted by another user, and a job script must never reach them. Deadlines to be
served (``scalable.relay.connect-timeout``, a busy relay is asked again meanwhile) and to be
answered (``scalable.relay.reply-timeout``) turn a relay that stopped answering into an error.

Job scripts: dask-jobqueue writes its job script to the container's private ``/tmp``, which the
host cannot see. When ``sbatch`` is given a script path that exists here, the client sends the
script's content on stdin instead (``sbatch`` reads a script from there), whatever the image binds.
"""

from __future__ import annotations

import asyncio
import errno
import os
import time
from collections.abc import Sequence

from .. import config
from ..command import RELAY_ENV, CommandError, CommandResult
from . import protocol
from .shim import sbatch_stdin


class RelayUnavailable(CommandError):
    """The relay's socket cannot be reached."""


def _socket_path(argv) -> str:
    path = os.environ.get(RELAY_ENV)
    if not path:
        raise RelayUnavailable(
            argv, 127, "", f"{RELAY_ENV} is not set, so {argv[0]!r} cannot reach the host"
        )
    return path


def _prepare(argv, input, cwd):
    argv = [str(a) for a in argv]
    stdin = input.encode() if isinstance(input, str) else (input or b"")
    if argv[0] == "sbatch" and not stdin:
        argv, stdin = sbatch_stdin(argv)
    return argv, stdin, os.path.abspath(cwd or os.getcwd())


def _timeouts(timeout):
    return protocol.timeouts(
        config.get("relay.connect-timeout"), config.get("relay.reply-timeout"), timeout
    )


def _result(argv, timeout, header, out: bytes, err: bytes) -> CommandResult:
    stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
    if header.get("error"):
        raise CommandError(
            argv, header.get("returncode", 126), "", f"refused by the host relay: {header['error']}"
        )
    if header.get("timed_out"):
        raise CommandError(argv, -9, stdout, f"timed out after {timeout} s on the host")
    return CommandResult(tuple(argv), int(header["returncode"]), stdout, stderr)


def _unreachable(argv, path, e) -> RelayUnavailable:
    return RelayUnavailable(
        argv,
        127,
        "",
        f"cannot reach the host relay at {path} ({e.strerror or e}); restart the kernel so its launcher "
        f"starts a new relay, or start one on the host with `scalable relay --socket {path}`",
    )


def relay_run(
    argv: Sequence[str],
    input: str | bytes | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
) -> CommandResult:
    """Run ``argv`` on the host through the relay named by ``SCALABLE_RELAY``.

    Parameters
    ----------
    argv : list of str
        An allowlisted program (by bare name) and its arguments.
    input : str or bytes, optional
        Sent to the command's stdin.
    cwd : str, optional
        Directory the host runs the command in (default: the current one); it must exist at
        the same path on the host.
    timeout : float, optional
        Seconds before the host kills the command.

    Examples
    --------
    >>> relay_run(["squeue", "--me", "-h"]).returncode   # doctest: +SKIP
    0
    """
    path = _socket_path(argv)
    original = list(argv)
    argv, stdin, cwd = _prepare(argv, input, cwd)
    connect_for, reply_for = _timeouts(timeout)
    try:
        header, out, err = protocol.call(
            path,
            argv,
            stdin=stdin,
            cwd=cwd,
            timeout=timeout,
            connect_timeout=connect_for,
            reply_timeout=reply_for,
        )
    except OSError as e:
        raise _unreachable(original, path, e) from None
    except protocol.ProtocolError as e:
        raise _bad_answer(original, e) from None
    return _result(original, timeout, header, out, err)


def _bad_answer(argv, e: protocol.ProtocolError) -> CommandError:
    if isinstance(e, (protocol.ForeignRelay, protocol.NoReply)):
        return CommandError(argv, 126, "", str(e))
    return CommandError(argv, 126, "", f"the host relay answered badly: {e}")


async def relay_arun(
    argv: Sequence[str],
    input: str | bytes | None = None,
    cwd: str | None = None,
    timeout: float | None = None,
) -> CommandResult:
    """Coroutine twin of :func:`relay_run`, for the cluster's event loop."""
    path = _socket_path(argv)
    original = list(argv)
    argv, stdin, cwd = _prepare(argv, input, cwd)
    connect_for, reply_for = _timeouts(timeout)
    t0 = time.monotonic()
    connect_by, reply_by = t0 + connect_for, t0 + reply_for
    request = (
        protocol.encode_header(protocol.request_header(argv, cwd, timeout, len(stdin))) + stdin
    )
    delay = 0.05
    while True:
        try:
            header, out, err = await _aexchange(path, request, connect_by, reply_by)
        except (asyncio.TimeoutError, TimeoutError):
            raise _bad_answer(original, protocol.no_reply(path, reply_for)) from None
        except (asyncio.IncompleteReadError, protocol.ProtocolError) as e:
            e = e if isinstance(e, protocol.ProtocolError) else protocol.Truncated(str(e))
            raise _bad_answer(original, e) from None
        except OSError as e:
            raise _unreachable(original, path, e) from None
        if not header.get("retry") or time.monotonic() + delay >= connect_by:
            return _result(original, timeout, header, out, err)
        await asyncio.sleep(delay)  # the relay was too busy to read the request: send it again
        delay = min(2 * delay, 1.0)


async def _aexchange(path: str, request: bytes, connect_by: float, reply_by: float):
    ready_by = min(connect_by, time.monotonic() + protocol.READY_WAIT)
    while True:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(path, limit=1 << 20),
                max(connect_by - time.monotonic(), 0.001),
            )
            break
        except (asyncio.TimeoutError, TimeoutError):
            raise OSError(
                errno.ETIMEDOUT, "no connection accepted in time (scalable.relay.connect-timeout)"
            ) from None
        except OSError as e:
            if not protocol.retryable(path, e, ready_by, connect_by):
                raise
        await asyncio.sleep(0.05)
    try:
        protocol.check_peer(writer.get_extra_info("socket"), path)
        try:
            writer.write(request)
            await asyncio.wait_for(writer.drain(), max(reply_by - time.monotonic(), 0.001))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the relay refused before reading (busy, another uid): its reply is waiting
        return await asyncio.wait_for(
            protocol.arecv_message(reader), max(reply_by - time.monotonic(), 0.001)
        )
    finally:
        writer.close()
