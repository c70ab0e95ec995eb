"""The process's signal handlers: left as scalable found them, and, while clusters are open,
SIGTERM and SIGHUP first close them.

A closed SSH session (SIGHUP) or a killed JupyterLab (SIGTERM) would otherwise end the process
without ``close()``: its Slurm jobs would stay queued until their walltime. While at least one
cluster is open, :func:`hold` installs a handler that closes every open cluster, then hands the
signal to the handler that was there before (the default one ends the process as it would
have). The last :func:`release` puts the previous handlers back. Handlers can only be changed
from the main thread (a Python rule): elsewhere this is skipped, with a debug log.

Examples
--------
>>> with preserved():            # doctest: +SKIP
...     import dask_jobqueue     # its runner module replaces SIGINT's handler
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import weakref

logger = logging.getLogger(__name__)

#: the signals that end a process holding a cluster without asking it
TERMINATING = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)
#: the handlers an import must not change
PRESERVED = (signal.SIGINT, *TERMINATING)

_lock = threading.RLock()
# id -> cluster; weak, so that a cluster dropped without close() is still collected (and
# closed by its finalizer) as before
_open: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
_previous: dict[int, object] = {}  # signal -> the handler ours replaced


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def preserved():
    """Restore, on leaving, the handlers of SIGINT, SIGTERM and SIGHUP if the block changed them.

    dask-jobqueue's ``runner`` module, imported by its ``slurm`` module, replaces SIGINT's
    handler with ``sys.exit()``: a script interrupted with Ctrl-C would exit with status 0.
    """
    saved = {sig: signal.getsignal(sig) for sig in PRESERVED}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            # None: a handler not installed from Python, which cannot be put back from here
            if handler is not None and signal.getsignal(sig) is not handler:
                if _main_thread():
                    signal.signal(sig, handler)
                else:
                    logger.debug(
                        "signal %s changed by an import outside the main thread; left as is", sig
                    )


def hold(cluster) -> None:
    """Count ``cluster`` as open; the first open cluster installs the closing handlers."""
    with _lock:
        _open[id(cluster)] = cluster
        if not _main_thread():
            logger.debug(
                "cluster opened outside the main thread: SIGTERM/SIGHUP handlers "
                "not installed (signal handlers belong to the main thread)"
            )
            return
        for sig in TERMINATING:
            if sig in _previous:
                continue
            before = signal.getsignal(sig)
            if before is signal.SIG_IGN or before is None:
                # ignored (nohup), or owned by C code: the process would not end, so neither
                # should its clusters
                continue
            _previous[sig] = before
            signal.signal(sig, _on_signal)


def release(cluster) -> None:
    """Count ``cluster`` as closed; once none is open, restore the previous handlers."""
    with _lock:
        _open.pop(id(cluster), None)
        if _open or not _previous:
            return
        if not _main_thread():
            # put back by the next hold/release in the main thread; until then ours only chains
            logger.debug("last cluster closed outside the main thread: handlers restored later")
            return
        for sig, before in list(_previous.items()):
            if signal.getsignal(sig) is _on_signal:  # someone installed theirs since: keep it
                signal.signal(sig, before)
            del _previous[sig]


def _on_signal(signum, frame):
    with _lock:
        clusters = list(_open.values())
        before = _previous.get(signum, signal.SIG_DFL)
    for cluster in reversed(clusters):
        try:
            logger.warning(
                "signal %s: closing scalable cluster %s (cancelling its jobs)",
                signal.Signals(signum).name,
                getattr(cluster, "cluster_id", "?"),
            )
            cluster._close_on_signal()
        except Exception as e:  # noqa: BLE001  (every cluster must get its turn)
            logger.warning("closing cluster on signal %s failed: %s", signum, e)
        release(cluster)
    if callable(before):
        before(signum, frame)
    elif before is signal.SIG_DFL:
        # end the way the process would have without us (status -signum to the parent)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
