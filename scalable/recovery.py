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

from dask.utils import parse_timedelta
from distributed.core import Status
from tornado.ioloop import PeriodicCallback

from . import config

logger = logging.getLogger(__name__)

#: Pending reasons that never clear by waiting: flagged in ``tag_status()``.
HOPELESS_REASONS = {
    "BadConstraints",
    "PartitionConfig",
    "PartitionNodeLimit",
    "InvalidAccount",
    "InvalidQOS",
    "AssocGrpCpuLimit",
    "QOSMaxCpuPerJobLimit",
    "QOSMaxMemoryPerJob",
    "ReqNodeNotAvail",
    "PartitionDown",
    "PartitionInactive",
    "AccountNotAllowed",
    "DependencyNeverSatisfied",
}


class Watcher:
    """Recovery loop of one cluster (see the module docstring).

    It talks to the cluster's tag pools only: each :class:`~scalable.pool.TagPool` holds its
    tag's owed replacements, retiring workers and failure state, and the backend hooks
    (:class:`~scalable.pool.PoolBackend`) say what a job's end means.

    Parameters
    ----------
    cluster : TaggedCluster
        The cluster; the watcher reads its ``pools``, ``status`` and one job query per pass.
    """

    def __init__(self, cluster, clock=None):
        self.cluster = cluster
        self.clock = clock or time.monotonic
        self.interval = parse_timedelta(config.get("recovery.interval"))
        self.max_failures = int(config.get("recovery.max-failures"))
        self.backoff_max = parse_timedelta(config.get("recovery.backoff-max"))
        self.lead = parse_timedelta(config.get("recovery.rollover-lead"))
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
        """One pass: find lost jobs, schedule replacements, submit those due, let retiring
        workers go."""
        pools = list(self.cluster.pools.values())
        now = self.clock()
        # judge only jobs that existed before the query: one submitted while squeue runs
        # is missing from its answer without being lost
        known = {pool.tag: pool.workers() for pool in pools}
        if any(known.values()):
            jobs = await self.cluster._jobs_async(fresh=True)
            if self.closed:
                return
            live = {j["job_id"] for j in jobs}
            for pool in pools:
                connected = pool.connected()
                current = pool.workers()
                for name, worker in known[pool.tag].items():
                    if current.get(name) is not worker:
                        continue  # closed or replaced meanwhile
                    if name in connected:
                        if name not in pool.seen:
                            pool.seen[name] = now
                            pool.failures = pool.vanished = 0
                        continue
                    if pool.backend._job_alive(worker, live):
                        continue
                    self._lost(pool, name, worker, now)
                self._rollover(pool, now)
        for pool in pools:
            await self._submit_due(pool, now)
            await pool.drain()

    def _lost(self, pool, name, worker, now):
        c = pool.backend
        tag = pool.tag
        c.workers.pop(name, None)
        worker.status = Status.closed  # its job is already gone: nothing to cancel
        leaving = name in pool.replaced or name in pool.retiring
        if c.worker_spec.pop(name, None) is None or leaving:
            pool.replaced.discard(name)
            pool.retiring.pop(name, None)
            pool.seen.pop(name, None)
            return  # removed on purpose, or already replaced ahead of its lifetime
        if name in pool.seen:
            pool.seen.pop(name)
            logger.info("worker %s was lost; replacing it", name)
            pool.owed.append(now)
            return
        if c._ended_outside(worker):
            # cancelled (by the user, an admin, a preemption) before the container could show
            # whether it works: this says nothing about the tag; replace it, backing off if it
            # keeps happening
            pool.vanished += 1
            n = pool.vanished
            logger.info(
                "job of worker %s was ended by Slurm before it connected; replacing it", name
            )
            pool.owed.append(now + (self._backoff(n) if n > 1 else 0))
            return
        pool.failures += 1
        n = pool.failures
        why = c._failure_detail(worker)
        refused = c._start_refusal(worker)  # e.g. an image with other versions: retrying won't help
        if refused or n >= self.max_failures:
            pool.error = refused or (
                f"{n} workers of tag {tag!r} in a row ended before connecting, so scalable "
                f"stopped starting more. Last job log:\n{why}"
            )
            pool.owed.clear()
            started = pool.workers()
            for other in [s for s in pool.all_names() if s not in started]:
                c.worker_spec.pop(other)
            c.last_error = pool.error
            logger.error(pool.error)
            warnings.warn(pool.error, RuntimeWarning, stacklevel=2)
        else:
            delay = self._backoff(n)
            logger.warning(
                "worker %s of %r failed to start (%d in a row), retrying in %.0f s: %s",
                name,
                tag,
                n,
                delay,
                why.strip().splitlines()[-1:] or "",
            )
            pool.owed.append(now + delay)

    def _backoff(self, n) -> float:
        """Seconds to wait before retrying a tag after its ``n``-th setback in a row."""
        return min(2.0**n, self.backoff_max)

    def _rollover(self, pool, now):
        life = pool.backend._lifetime_seconds(pool.tag)
        if not life:
            return
        specs = pool.backend.worker_spec
        for name, since in list(pool.seen.items()):
            if name in pool.replaced or name in pool.retiring or name not in specs:
                continue
            if now >= since + life - self.lead:
                # its worker retires soon: start the next one now so the pool never dips
                pool.replaced.add(name)
                pool.owed.append(now)

    async def _submit_due(self, pool, now):
        ready = [d for d in pool.owed if d <= now]
        if not ready or self.closed or pool.error:
            return
        pool.owed[:] = [d for d in pool.owed if d > now]
        self.replaced += len(ready)
        new = await pool.scale_to(
            pool.target + len(ready) * pool.per_spec, asynchronous=True, manual=False, wait=False
        )
        started = pool.workers()
        failed = [name for name in new if name not in started]
        if failed:  # the submission failed: try again later
            pool.failures += 1
            if pool.failures >= self.max_failures:
                pool.error = (
                    f"replacing workers of tag {pool.tag!r} failed "
                    f"{pool.failures} times: {pool.backend.last_error}"
                )
                pool.owed.clear()
                return
            pool.owed.extend([self.clock() + self._backoff(pool.failures)] * len(failed))
