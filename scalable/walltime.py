"""Failing, with a useful message, tasks that keep outliving their workers' walltime.

Workers retire gracefully before walltime (``--lifetime``); Dask then quietly reruns whatever
they were computing on another worker. A task longer than the walltime would loop forever that
way. :class:`WalltimeGuard` counts those losses per task and, after ``walltime-losses`` of them,
fails the task with :class:`WalltimeExceeded`, which names the walltime and the fix.
"""

from __future__ import annotations

import time
from collections import defaultdict

from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.protocol import pickle

#: stimulus of a worker that closes itself gracefully (its lifetime ended)
GRACEFUL = "worker-close-gracefully"


class WalltimeExceeded(RuntimeError):
    """A task was stopped by its workers' walltime too many times."""


class WalltimeGuard(SchedulerPlugin):
    """Scheduler plugin: see the module docstring.

    Parameters
    ----------
    scheduler : distributed.Scheduler
        The scheduler it is added to (already running, so ``start`` is not called).
    describe : callable
        ``describe(tag)`` -> ``(walltime, fix)``: the walltime of that tag's workers now (a
        task without a tag: the cluster's), and the code that raises it, for the message.
    max_losses : int
        Losses to worker retirement before the task fails.
    """

    name = "scalable-walltime-guard"

    def __init__(self, scheduler, describe, max_losses=2):
        self.scheduler = scheduler
        self.describe = describe
        self.max_losses = max_losses
        self.losses = defaultdict(int)
        self.doomed = set()

    def transition(self, key, start, finish, *args, stimulus_id=None, **kwargs):
        if (
            start == "processing"
            and finish in ("released", "waiting")
            and str(stimulus_id).startswith(GRACEFUL)
        ):
            self.losses[key] += 1
            if self.losses[key] >= self.max_losses:
                self.doomed.add(key)
        elif finish in ("memory", "erred", "forgotten"):
            self.losses.pop(key, None)
            self.doomed.discard(key)
        if key in self.doomed and finish in ("processing", "no-worker", "queued"):
            # never transition from inside a transition: do it on the next loop iteration
            self.scheduler.loop.add_callback(self._fail, key)

    def _fail(self, key):
        ts = self.scheduler.tasks.get(key)
        if (
            key not in self.doomed
            or ts is None
            or ts.state not in ("processing", "no-worker", "queued")
        ):
            return
        n = self.losses[key]
        # the task's tag is its only resource restriction (a tag with its own walltime says so)
        tag = next(iter(ts.resource_restrictions or {}), None)
        walltime, fix = self.describe(tag)
        error = WalltimeExceeded(
            f"task {key!r} was stopped {n} times because its worker reached the end of its "
            f"walltime ({walltime}): raise the walltime ({fix}, longer than the task) or split "
            f"the task into shorter ones."
        )
        kwargs = {
            "exception": pickle.dumps(error),
            "cause": key,
            "traceback": None,
            "exception_text": str(error),
            "traceback_text": "",
        }
        if ts.state == "processing":
            kwargs["worker"] = ts.processing_on.address
        stimulus_id = f"scalable-walltime-{time.time()}"
        self.doomed.discard(key)
        recs = self.scheduler.transition(key, "erred", stimulus_id=stimulus_id, **kwargs)
        self.scheduler.transitions(recs, stimulus_id=stimulus_id)
