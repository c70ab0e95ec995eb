"""The relay's request threads: bounded, reused while busy, reaped when idle.

A thread per connection in flight, handed the next connection when it is done: a client still
sending, waiting for a command slot or reading slowly never holds up another one, and a thread
that is already waiting costs a round trip far less than a new one. Three limits keep that safe:

- at most ``max_threads`` at once; past that :meth:`RequestThreads.submit` says no and the
  relay answers "busy, retry" (the client retries by itself for a while);
- a thread that cannot be started (a pids limit, no memory) is the same "no": the accept loop
  never dies of it, so the relay does not wedge with its socket still there;
- a thread idle for ``idle_timeout`` seconds ends, down to ``keep`` warm ones, so a burst does
  not leave hundreds of threads behind.

Examples
--------
>>> served = threading.Event()
>>> threads = RequestThreads(lambda conn: served.set(), max_threads=2, idle_timeout=1.0)
>>> threads.submit("a connection"), served.wait(10)
(True, True)
>>> threads.close()
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable


class RequestThreads:
    """Run ``serve(conn)`` for each submitted connection on a bounded set of threads.

    Parameters
    ----------
    serve : callable
        Called with each connection; must not raise (the relay's handler catches everything).
    max_threads : int
        Most threads at once.
    idle_timeout : float
        Seconds an idle thread waits for work before it ends (unless it is one of ``keep``).
    keep : int
        Idle threads kept warm for the next requests.
    """

    def __init__(
        self,
        serve: Callable,
        *,
        max_threads: int,
        idle_timeout: float,
        keep: int = 2,
        name: str = "relay-request",
    ):
        self._serve = serve
        self.max_threads = max_threads
        self.idle_timeout = idle_timeout
        self.keep = keep
        self._name = name
        # Hand-offs happen under the lock, so an idle thread that times out can tell whether a
        # connection was just handed to it (it is in the queue) or not (it may end).
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = 0  # started and not ended
        self._idle = 0  # waiting for a connection and not yet handed one
        self._closed = False

    @property
    def count(self) -> int:
        """Threads started and not yet ended."""
        return self._threads

    def submit(self, conn) -> bool:
        """Give ``conn`` to an idle thread or a new one; ``False`` if there is none to give it to
        (the limit is reached, a thread could not start, or the pool is closed)."""
        with self._lock:
            if self._closed:
                return False
            if self._idle:
                self._idle -= 1
                self._queue.put(conn)
                return True
            if self._threads >= self.max_threads:
                return False
            self._threads += 1
        try:
            threading.Thread(target=self._run, args=(conn,), name=self._name, daemon=True).start()
        except RuntimeError:  # "can't start new thread": the caller answers busy and goes on
            with self._lock:
                self._threads -= 1
            return False
        return True

    def close(self) -> None:
        """Let idle threads end; busy ones end after their connection."""
        with self._lock:
            self._closed = True
            for _ in range(self._idle):
                self._queue.put(None)
            self._idle = 0

    def _run(self, conn) -> None:
        try:
            while conn is not None:
                self._serve(conn)
                conn = self._next()
        finally:
            with self._lock:
                self._threads -= 1

    def _next(self):
        with self._lock:
            if self._closed:
                return None
            self._idle += 1
        while True:
            try:
                return self._queue.get(timeout=self.idle_timeout)
            except queue.Empty:
                pass
            with self._lock:
                try:
                    return self._queue.get_nowait()  # handed one as the wait ended
                except queue.Empty:
                    pass
                if self._closed:
                    return None
                if self._idle > self.keep:
                    self._idle -= 1
                    return None
