"""Running one relayed command under watch: its pipes, its exit, its client and its clock.

:func:`communicate` is :meth:`subprocess.Popen.communicate` for the relay: besides feeding
stdin and collecting stdout and stderr, it kills the command's process group when the deadline
passes or the client hangs up, and notices the command's exit even after it closed its output.
"""

from __future__ import annotations

import os
import select
import selectors
import signal
import socket
import subprocess
import time


def hung_up(conn: socket.socket) -> bool:
    """Has the client closed its end? (It sends nothing after its request.)"""
    try:
        return select.select([conn], [], [], 0)[0] != [] and conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def communicate(proc: subprocess.Popen, stdin: bytes, conn: socket.socket, deadline: float):
    """Feed ``stdin``, collect stdout/stderr and wait, watching the client and the clock.

    Returns ``(stdout, stderr, outcome)``, outcome being ``"done"``, ``"timeout"`` (the command's
    process group was killed) or ``"gone"`` (the client hung up: it sends nothing after its
    request, so end-of-file on its socket means it was killed or interrupted). The command's
    exit is watched too (a pidfd), so one that closes its output and keeps running still meets
    the timeout and the client's hang-up.
    """
    out, err = [], []
    pipes = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    sel = selectors.PollSelector()
    for fd in pipes:
        sel.register(fd, selectors.EVENT_READ)
    sel.register(conn, selectors.EVENT_READ)
    try:
        pidfd = os.pidfd_open(proc.pid)
        sel.register(pidfd, selectors.EVENT_READ)
    except (AttributeError, OSError):  # Linux before 5.3: poll for the exit below instead
        pidfd = None
    data, sent, wfd = memoryview(stdin), 0, None
    if stdin:
        wfd = proc.stdin.fileno()
        os.set_blocking(wfd, False)
        sel.register(wfd, selectors.EVENT_WRITE)
    outcome, open_pipes, exited, give_up = "done", set(pipes), pidfd is None, None
    try:
        while open_pipes or wfd is not None or not exited:
            now = time.monotonic()
            if outcome == "done" and now >= deadline:
                outcome, give_up = "timeout", now + 5.0
                kill_group(proc.pid)
            if give_up is not None and now >= give_up:
                break  # something outside the killed group holds the pipes: stop waiting
            wait = (deadline if give_up is None else give_up) - now
            for key, _ in sel.select(max(wait, 0)):
                fd = key.fd
                if fd == pidfd:
                    exited = True  # (without a pidfd, exited starts True: see below)
                    sel.unregister(pidfd)
                elif fd == wfd:
                    try:
                        sent += os.write(fd, data[sent : sent + (1 << 20)])
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:
                        sent = len(data)  # the command stopped reading, as with communicate()
                    if sent >= len(data):
                        sel.unregister(fd)
                        proc.stdin.close()
                        wfd = None
                elif key.fileobj is conn:
                    try:
                        gone = not conn.recv(4096)
                    except OSError:
                        gone = True
                    if gone:
                        sel.unregister(conn)
                        if outcome == "done":
                            outcome, give_up = "gone", time.monotonic() + 5.0
                            kill_group(proc.pid)
                else:
                    chunk = os.read(fd, 1 << 16)
                    if chunk:
                        pipes[fd].append(chunk)
                    else:
                        sel.unregister(fd)
                        open_pipes.discard(fd)
        while pidfd is None and proc.poll() is None and give_up is None:
            # no pidfd: the output is closed but the command runs on; check every 0.1 s
            if time.monotonic() >= deadline:
                outcome, give_up = "timeout", 0
            elif select.select([conn], [], [], 0.1)[0] and hung_up(conn):
                outcome, give_up = "gone", 0
            if give_up is not None:
                kill_group(proc.pid)
    except BaseException:
        kill_group(proc.pid)  # never leave a command running unsupervised
        raise
    finally:
        sel.close()
        if pidfd is not None:
            os.close(pidfd)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                f.close()
        proc.wait()
    return b"".join(out), b"".join(err), outcome


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
