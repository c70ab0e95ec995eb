"""The scheduler scalable clusters run: Dask's, forgiving tasks that never started.

When a worker dies unexpectedly, Dask counts every task assigned to it as "suspicious" and fails
a task that was on ``allowed-failures`` dead workers with ``KilledWorker``. Tasks restricted to a
tag are all assigned to that tag's workers at once, so on an HPC, where jobs are cancelled,
preempted or lose their node for reasons unrelated to the tasks, a backlog waiting behind one
running task would be failed after a few unrelated losses. :class:`ScalableScheduler` counts only
the tasks that were really executing on the dead worker, when its last heartbeat accounts for all
of its threads; otherwise it counts every task, as Dask does, so a task that crashes its workers
still fails in the end.
"""

from __future__ import annotations

from distributed import Scheduler


class ScalableScheduler(Scheduler):
    """A :class:`distributed.Scheduler` that does not blame tasks queued on a lost worker."""

    async def remove_worker(self, address, *, stimulus_id, expected=False, close=True):
        ws = self.workers.get(self.coerce_address(address))
        if ws is not None and not expected and len(ws.processing) > ws.nthreads:
            executing = {ts for ts in ws.executing if ts in ws.processing}
            if len(executing) >= ws.nthreads:  # the heartbeat knows what every thread ran
                for ts in ws.processing:
                    if ts not in executing:
                        # Dask adds one right after this: net zero for a task that never ran
                        ts.suspicious -= 1
                        ts.prefix.suspicious -= 1
        return await super().remove_worker(
            address, stimulus_id=stimulus_id, expected=expected, close=close
        )
