"""The recovery rules of :class:`scalable.recovery.Watcher` on a fake clock (fast layer).

The watcher talks to a cluster's tag pools only, and the pools to their backend's bookkeeping
(worker specs, workers, connected names, live jobs); here that backend is a small in-memory
cluster whose jobs the test ends by hand, and time is a number the test moves. What a real Slurm does to these rules is in test_faults.py.
"""

import asyncio
from types import SimpleNamespace

import pytest
from distributed.core import Status

from scalable import recovery
from scalable.backend import PoolBackend
from scalable.pool import TagPool


class Clock:
    def __init__(self):
        self.now = 1000.0

    def monotonic(self):
        return self.now


class BookCluster(PoolBackend):
    """A cluster's bookkeeping as its tag pools see it; submitting makes a job at once."""

    def __init__(self, tags=("gcam",), lifetime=0):
        self.worker_spec, self.workers = {}, {}
        self.scheduler = SimpleNamespace(workers={})
        self.live = set()  # job ids Slurm still knows
        self.ended_by_slurm = set()  # worker names whose job Slurm ended from outside
        self.refusals = {}  # worker name -> why it can never start (e.g. other versions)
        self.status = Status.running
        self.last_error = None
        self.lifetime = lifetime
        self.submissions = []  # names, in submission order
        self.refuse = False
        self.pools = {t: TagPool(t, SimpleNamespace(tag=t, cpus=1), self) for t in tags}

    # the backend hooks the pools and the watcher call
    def _worker_spec(self, tag, name):
        return {"tag": tag}

    def _lifetime_seconds(self, tag=None):
        return self.lifetime

    def _job_alive(self, worker, live):
        return worker.job_id in live

    def _ended_outside(self, worker):
        return worker.name in self.ended_by_slurm

    def _start_refusal(self, worker):
        return self.refusals.get(worker.name)

    def _failure_detail(self, worker):
        return f"logs/{worker.name}.log:\nFATAL: could not open image"

    async def _jobs_async(self, fresh=False):
        assert fresh, "recovery must ask Slurm itself, never a cached answer"
        return [{"job_id": j} for j in sorted(self.live)]

    async def _start_new(self, names, raise_errors=False):
        for name in names:
            self.submissions.append(name)
            if self.refuse:
                self.worker_spec.pop(name, None)
                self.last_error = "sbatch: error: invalid partition"
                continue
            job = SimpleNamespace(name=name, job_id=f"job-{name}", status=Status.running)
            self.workers[name] = job
            self.live.add(job.job_id)
        return names

    def sync(self, func, *args):
        return asyncio.run(func(*args))

    # what the test does to it
    def add(self, tag="gcam"):
        pool = self.pools[tag]
        pool.scale_to(pool.target + 1)
        return self.submissions[-1]

    def connect(self, name):
        self.scheduler.workers[name] = SimpleNamespace(name=name)

    def end(self, name, by_slurm=False):
        self.live.discard(self.workers[name].job_id)
        self.scheduler.workers.pop(name, None)
        if by_slurm:
            self.ended_by_slurm.add(name)


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    # only the watcher's clock moves: the event loop keeps real time
    monkeypatch.setattr(recovery, "time", clock)
    return clock


def watch(cluster):
    watcher = recovery.Watcher(cluster)
    return watcher, lambda: asyncio.run(watcher.check())


def gcam(cluster):
    return cluster.pools["gcam"]


def test_failed_starts_back_off_then_the_tag_gives_up_with_the_log(clock):
    cluster = BookCluster()
    watcher, check = watch(cluster)
    assert watcher.max_failures == 3
    first = cluster.add()
    cluster.end(first)  # ran and ended by itself before its worker connected
    check()
    assert gcam(cluster).failures == 1 and cluster.submissions == [first]
    clock.now += 1.9
    check()
    assert cluster.submissions == [first], "retried before the 2 s backoff"
    clock.now += 0.1
    check()
    second = cluster.submissions[-1]
    assert len(cluster.submissions) == 2
    cluster.end(second)
    check()
    clock.now += 3.9
    check()
    assert len(cluster.submissions) == 2, "retried before the 4 s backoff"
    clock.now += 0.1
    check()
    third = cluster.submissions[-1]
    assert len(cluster.submissions) == 3
    cluster.end(third)
    with pytest.warns(
        RuntimeWarning, match="3 workers of tag 'gcam' in a row ended before connecting"
    ):
        check()
    assert "FATAL: could not open image" in gcam(cluster).error
    assert cluster.last_error == gcam(cluster).error
    clock.now += 3600
    check()
    assert len(cluster.submissions) == 3, "a tag that gave up is not retried"
    gcam(cluster).reset()  # the user asks again: past failures are forgotten
    assert gcam(cluster).error is None and gcam(cluster).failures == 0


def test_a_worker_that_can_never_start_stops_the_tag_at_once(clock):
    cluster = BookCluster()
    watcher, check = watch(cluster)
    first = cluster.add()
    why = "image gcam has distributed 2024.1, the scheduler 2025.1: rebuild the image"
    cluster.refusals[first] = why
    cluster.end(first)
    with pytest.warns(RuntimeWarning, match="rebuild the image"):
        check()
    assert gcam(cluster).error == why == cluster.last_error
    clock.now += 3600
    check()
    assert cluster.submissions == [first], "retried a start that can never succeed"


def test_backoff_doubles_up_to_its_ceiling():
    watcher = recovery.Watcher(BookCluster())
    assert [watcher._backoff(n) for n in range(1, 8)] == [2, 4, 8, 16, 32, 60, 60]


def test_a_lost_connected_worker_is_replaced_at_once_and_is_no_failure(clock):
    cluster = BookCluster()
    watcher, check = watch(cluster)
    name = cluster.add()
    cluster.connect(name)
    check()
    assert gcam(cluster).seen == {name: clock.now}
    cluster.end(name)  # node failure, OOM, scancel from outside
    check()
    assert len(cluster.submissions) == 2 and name not in cluster.worker_spec
    assert gcam(cluster).failures == 0 and watcher.replaced == 1


def test_jobs_ended_by_slurm_before_connecting_are_replaced_never_given_up(clock):
    cluster = BookCluster()
    watcher, check = watch(cluster)
    name = cluster.add()
    for n in range(1, 6):
        cluster.end(name, by_slurm=True)  # cancelled while pending, preempted...
        check()
        delay = 0 if n == 1 else min(2.0**n, 60)
        if delay:
            clock.now += delay - 0.1
            check()
            assert cluster.submissions[-1] == name, f"replaced before the {delay} s backoff"
            clock.now += 0.1
            check()
        assert cluster.submissions[-1] != name
        name = cluster.submissions[-1]
    assert gcam(cluster).failures == 0 and gcam(cluster).error is None
    cluster.connect(name)
    check()
    assert gcam(cluster).vanished == 0  # a connection clears the streak


def test_a_connection_clears_the_failure_streak(clock):
    cluster = BookCluster()
    watcher, check = watch(cluster)
    first = cluster.add()
    cluster.end(first)
    check()
    clock.now += 2
    check()
    second = cluster.submissions[-1]
    cluster.connect(second)
    check()
    assert gcam(cluster).failures == 0


def test_refused_replacements_count_and_give_up(clock):
    cluster = BookCluster()
    watcher, check = watch(cluster)
    name = cluster.add()
    cluster.connect(name)
    check()
    cluster.refuse = True  # e.g. the partition went away
    cluster.end(name)
    for _ in range(3):
        check()
        clock.now += 60
    assert "replacing workers of tag 'gcam' failed 3 times" in gcam(cluster).error
    assert "invalid partition" in gcam(cluster).error
    submitted = len(cluster.submissions)
    clock.now += 3600
    check()
    assert len(cluster.submissions) == submitted


def test_a_replacement_starts_ahead_of_the_lifetime(clock):
    cluster = BookCluster(lifetime=600)
    watcher, check = watch(cluster)
    assert watcher.lead == 60
    name = cluster.add()
    cluster.connect(name)
    check()
    clock.now += 539
    check()
    assert cluster.submissions == [name]
    clock.now += 1
    check()
    assert len(cluster.submissions) == 2, "no replacement 60 s before the lifetime ends"
    cluster.end(name)  # it retires on time: already replaced, not replaced again
    check()
    assert len(cluster.submissions) == 2 and gcam(cluster).failures == 0


def test_nothing_is_submitted_once_closed(clock):
    cluster = BookCluster()
    watcher, check = watch(cluster)
    name = cluster.add()
    cluster.connect(name)
    check()
    cluster.end(name)
    asyncio.run(watcher.stop())
    check()
    assert cluster.submissions == [name]
