"""Keeping each tag's pool at its target through faults and walltime.

A :class:`Watcher` runs on the cluster's event loop. Every ``scalable.recovery.interval`` it
makes one job-status query (one ``squeue`` on Slurm) and:

- replaces workers whose job ended unexpectedly (cancelled from outside, node failure, OOM,
  worker crash); Dask reruns their tasks elsewhere;
- replaces jobs that Slurm ended before their worker connected for reasons outside the
  container (cancelled while pending or starting, preempted, node failure) without counting
  them as failures, with backoff if it keeps happening;
- counts starts that failed (the job ran and ended by itself before its worker connected); after
  ``max-failures`` in a row for a tag it stops retrying that tag and records why (the tail of
  the job's log, where the container runtime's error lands) in ``cluster.tag_errors``, with
  exponential backoff before then;
- submits a replacement shortly before a worker's ``--lifetime`` ends, so walltime rollover does
  not shrink the pool.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections import defaultdict

from dask.utils import parse_timedelta
from distributed.core import Status
from tornado.ioloop import PeriodicCallback

from . import config

logger = logging.getLogger(__name__)

#: Pending reasons that never clear by waiting: flagged in ``tag_status()``.
HOPELESS_REASONS = {
    "BadConstraints", "PartitionConfig", "PartitionNodeLimit", "InvalidAccount", "InvalidQOS",
    "AssocGrpCpuLimit", "QOSMaxCpuPerJobLimit", "QOSMaxMemoryPerJob", "ReqNodeNotAvail",
    "PartitionDown", "PartitionInactive", "AccountNotAllowed", "DependencyNeverSatisfied",
}


class Watcher:
    """Recovery loop of one cluster (see the module docstring).

    Parameters
    ----------
    cluster : TaggedCluster
        The cluster; the watcher only uses its spec/worker bookkeeping and ``_jobs_async``.
    """

    def __init__(self, cluster):
        self.cluster = cluster
        self.interval = parse_timedelta(config.get("recovery.interval"))
        self.max_failures = int(config.get("recovery.max-failures"))
        self.backoff_max = parse_timedelta(config.get("recovery.backoff-max"))
        self.lead = parse_timedelta(config.get("recovery.rollover-lead"))
        self.failures = defaultdict(int)  # tag -> consecutive failed starts
        self.vanished = defaultdict(int)  # tag -> consecutive jobs that ended before starting
        self.errors = {}  # tag -> why we stopped retrying
        self.owed = defaultdict(list)  # tag -> [due time of a replacement]
        self.seen = {}  # spec name -> monotonic time its worker first connected
        self.retiring = set()  # spec names whose replacement was already submitted
        self.replaced = 0
        self._pc = None
        self._running = False
        self.closed = False

    def start(self):
        self._pc = PeriodicCallback(self._tick, self.interval * 1000)
        self._pc.start()

    async def stop(self):
        """Stop, and wait for a pass in flight, so nothing is submitted after close."""
        self.closed = True
        if self._pc is not None:
            self._pc.stop()
        while self._running:
            await asyncio.sleep(0.05)

    def reset(self, tag):
        """The user asked for workers again: forget past failures of ``tag``."""
        self.failures.pop(tag, None)
        self.vanished.pop(tag, None)
        self.errors.pop(tag, None)

    async def _tick(self):
        if self._running or self.closed or self.cluster.status != Status.running:
            return
        self._running = True
        try:
            await self.check()
        except Exception as e:  # the watcher must outlive a flaky squeue
            logger.warning("scalable recovery check failed: %s", e)
        finally:
            self._running = False

    async def check(self):
        """One pass: find lost jobs, schedule replacements, submit those due."""
        c = self.cluster
        now = time.monotonic()
        if c.workers:
            # judge only jobs that existed before the query: one submitted while squeue runs
            # is missing from its answer without being lost
            known = list(c.workers.items())
            jobs = await c._jobs_async(fresh=True)
            if self.closed:
                return
            live = {j["job_id"] for j in jobs}
            connected = {c._spec_name(ws.name) for ws in c.scheduler.workers.values()}
            for name, worker in known:
                if c.workers.get(name) is not worker:
                    continue  # closed or replaced meanwhile
                if name in connected:
                    if name not in self.seen:
                        self.seen[name] = now
                        self.failures.pop(c.tag_of(name), None)
                        self.vanished.pop(c.tag_of(name), None)
                    continue
                if c._job_alive(worker, live):
                    continue
                await self._lost(name, worker, now)
            self._rollover(now)
        await self._submit_due(now)

    async def _lost(self, name, worker, now):
        c = self.cluster
        tag = c.tag_of(name)
        c.workers.pop(name, None)
        worker.status = Status.closed  # its job is already gone: nothing to cancel
        if c.worker_spec.pop(name, None) is None or name in self.retiring:
            self.retiring.discard(name)
            self.seen.pop(name, None)
            return  # removed on purpose, or already replaced ahead of its lifetime
        if name in self.seen:
            self.seen.pop(name)
            logger.info("worker %s was lost; replacing it", name)
            self.owed[tag].append(now)
            return
        if c._ended_outside(worker):
            # cancelled (by the user, an admin, a preemption) before the container could show
            # whether it works: this says nothing about the tag; replace it, backing off if it
            # keeps happening
            self.vanished[tag] += 1
            n = self.vanished[tag]
            logger.info("job of worker %s was ended by Slurm before it connected; replacing it", name)
            self.owed[tag].append(now + (self._backoff(n) if n > 1 else 0))
            return
        self.failures[tag] += 1
        n = self.failures[tag]
        why = c._failure_detail(worker)
        refused = c._start_refusal(worker)  # e.g. an image with other versions: retrying won't help
        if refused or n >= self.max_failures:
            self.errors[tag] = refused or (
                f"{n} workers of tag {tag!r} in a row ended before connecting, so scalable "
                f"stopped starting more. Last job log:\n{why}"
            )
            self.owed.pop(tag, None)
            for other in [s for s in list(c.worker_spec) if c.tag_of(s) == tag and s not in c.workers]:
                c.worker_spec.pop(other)
            c.last_error = self.errors[tag]
            logger.error(self.errors[tag])
            warnings.warn(self.errors[tag], RuntimeWarning, stacklevel=2)
        else:
            delay = self._backoff(n)
            logger.warning("worker %s of %r failed to start (%d in a row), retrying in %.0f s: %s",
                           name, tag, n, delay, why.strip().splitlines()[-1:] or "")
            self.owed[tag].append(now + delay)

    def _backoff(self, n) -> float:
        """Seconds to wait before retrying a tag after its ``n``-th setback in a row."""
        return min(2.0 ** n, self.backoff_max)

    def _rollover(self, now):
        c = self.cluster
        life = c._lifetime_seconds()
        if not life:
            return
        for name, since in list(self.seen.items()):
            if name in self.retiring or name not in c.worker_spec:
                continue
            if now >= since + life - self.lead:
                # its worker retires soon: start the next one now so the pool never dips
                self.retiring.add(name)
                self.owed[c.tag_of(name)].append(now)

    async def _submit_due(self, now):
        c = self.cluster
        new = []
        for tag, dues in list(self.owed.items()):
            ready = [d for d in dues if d <= now]
            if not ready or tag not in c.containers:
                continue
            self.owed[tag] = [d for d in dues if d > now]
            new += [c._new_name(tag) for _ in ready]
        if new and not self.closed:
            self.replaced += len(new)
            await c._add_specs({name: c._worker_spec(c.tag_of(name), name) for name in new})
            for name in new:
                if name not in c.workers:  # the submission failed: try again later
                    tag = c.tag_of(name)
                    self.failures[tag] += 1
                    if self.failures[tag] >= self.max_failures:
                        self.errors[tag] = (f"replacing workers of tag {tag!r} failed "
                                            f"{self.failures[tag]} times: {c.last_error}")
                        self.owed.pop(tag, None)
                        continue
                    self.owed[tag].append(time.monotonic() + self._backoff(self.failures[tag]))
