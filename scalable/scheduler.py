"""The scheduler scalable clusters run: Dask's, forgiving tasks that never started.

When a worker dies unexpectedly, Dask counts every task assigned to it as "suspicious" and fails
a task that was on ``allowed-failures`` dead workers with ``KilledWorker``. Tasks restricted to a
tag are all assigned to that tag's workers at once, so on an HPC, where jobs are cancelled,
preempted or lose their node for reasons unrelated to the tasks, a backlog waiting behind one
running task would be failed after a few unrelated losses. :class:`ScalableScheduler` blames at
most as many tasks as the worker had threads: those its last heartbeat reported executing, then
the highest-priority ones it held (a worker runs its ready tasks in priority order, so those are
the ones that can have started since). A task that crashes its workers is among those every
time, so it still fails in the end; the backlog behind it does not.

Its HTTP server answers only under its ``dashboard_prefix`` (see :mod:`scalable.security`): with
a secret prefix, nobody who lacks the link reads the dashboard.
"""

from __future__ import annotations

from distributed import Scheduler

from .security import guard_http_server


class ScalableScheduler(Scheduler):
    """A :class:`distributed.Scheduler` that does not blame tasks queued on a lost worker,
    and serves HTTP only under ``dashboard_prefix`` (when given)."""

    def __init__(self, *args, dashboard_prefix=None, **kwargs):
        self._dashboard_prefix = dashboard_prefix  # read by start_http_server, from Scheduler()
        super().__init__(*args, **kwargs)

    def start_http_server(self, *args, **kwargs):
        super().start_http_server(*args, **kwargs)
        guard_http_server(self, self._dashboard_prefix)

    async def remove_worker(self, address, *, stimulus_id, expected=False, close=True):
        ws = self.workers.get(self.coerce_address(address))
        if ws is not None and not expected and len(ws.processing) > ws.nthreads:
            for ts in ws.processing - self._maybe_running(ws):
                # Dask adds one right after this: net zero for a task that never ran
                ts.suspicious -= 1
                ts.prefix.suspicious -= 1
        return await super().remove_worker(
            address, stimulus_id=stimulus_id, expected=expected, close=close
        )

    @staticmethod
    def _maybe_running(ws) -> set:
        """At most ``ws.nthreads`` tasks of ``ws`` that may have been running when it died."""
        running = {ts for ts in ws.executing if ts in ws.processing}
        if len(running) < ws.nthreads:
            # the heartbeat is up to a second old: whatever started since came first in order
            rest = sorted(ws.processing - running, key=lambda ts: ts.priority or ())
            running.update(rest[: ws.nthreads - len(running)])
        return running
