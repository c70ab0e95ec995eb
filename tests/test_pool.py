"""TagPool, recovery and adapt decisions on a fake backend and a fake clock (no Slurm, no Dask
cluster): what each decision does to one tag's pool."""

from __future__ import annotations

import asyncio
import math
import types

import pytest
from distributed.core import Status

from scalable.adapt import TagAdaptive, demand
from scalable.backend import PoolBackend
from scalable.pool import TagPool, tag_of
from scalable.recovery import Watcher


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class WS:
    """What a pool reads of a scheduler's WorkerState."""

    def __init__(self, name, tag, busy=0, data=0):
        self.name = name
        self.address = f"tcp://{name}"
        self.resources = {tag: 1}
        self.processing = {f"task{i}": 1 for i in range(busy)}
        self.has_what = {f"key{i}" for i in range(data)}
        self.nbytes = 100 * data
        self.nthreads = 1
        self.status = Status.running


class TS:
    """A task waiting for a tag (what adapt reads of a TaskState)."""

    def __init__(self, tag, seconds):
        self.resource_restrictions = {tag: 1}
        self.prefix = seconds


class FakeScheduler:
    def __init__(self):
        self.workers = {}
        self.unrunnable = {}
        self.retire_calls = []

    def connect(self, name, tag=None, **kw):
        ws = WS(name, tag or tag_of(name), **kw)
        self.workers[ws.address] = ws
        return ws

    async def retire_workers(self, workers, close_workers, remove):
        self.retire_calls.append(list(workers))
        # as Dask: a worker's unique data needs another running worker to move to
        out = {}
        for addr in workers:
            ws = self.workers[addr]
            others = [w for w in self.workers.values() if w.address not in workers]
            if ws.has_what and not others:
                continue
            for other in others[:1]:
                other.has_what |= ws.has_what
            out[addr] = {}
            del self.workers[addr]
        return out


class FakeJob:
    def __init__(self, name):
        self.name = name
        self.job_id = f"job-{name}"
        self.status = Status.running


class FakeBackend(PoolBackend):
    """A backend whose jobs start at once and whose scheduler is a dict."""

    def __init__(self, lifetime=None):
        self.worker_spec = {}
        self.workers = {}
        self.scheduler = FakeScheduler()
        self.starts = []  # one entry per burst
        self.last_error = None
        self.status = Status.running
        self.pools = {}
        self.lifetime = lifetime
        self.refuse = False
        self.live = set()

    def add_pool(self, tag, clock):
        spec = types.SimpleNamespace(tag=tag, cpus=1)
        self.pools[tag] = TagPool(tag, spec, self, clock=clock)
        return self.pools[tag]

    def _worker_spec(self, tag, name):
        return {"cls": FakeJob, "options": {"tag": tag}}

    async def _correct_state(self):
        for name in list(self.workers):
            if name not in self.worker_spec:
                self.live.discard(self.workers.pop(name).job_id)
        for name in self.worker_spec:
            if name not in self.workers:
                self.workers[name] = FakeJob(name)
                self.live.add(self.workers[name].job_id)

    async def _start_new(self, names, raise_errors=False):
        self.starts.append(list(names))
        if self.refuse:
            for name in names:
                self.worker_spec.pop(name, None)
            self.last_error = "Slurm refused"
            if raise_errors:
                raise RuntimeError("Slurm refused")
            return names
        await self._correct_state()
        return names

    async def _jobs_async(self, fresh=False):
        return [{"job_id": j} for j in self.live]

    def _lifetime_seconds(self, tag=None):
        return self.lifetime

    def sync(self, func, *args):
        async def go():
            out = func(*args)
            return await out if asyncio.iscoroutine(out) else out

        return asyncio.run(go())


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def backend():
    return FakeBackend()


def run(coro):
    return asyncio.run(coro)


def test_scale_up_is_one_burst_with_names_of_the_tag(backend, clock):
    pool = backend.add_pool("gcam", clock)
    assert pool.scale_to(3) == ["gcam-0", "gcam-1", "gcam-2"]
    assert backend.starts == [["gcam-0", "gcam-1", "gcam-2"]]
    assert pool.target == 3 and sorted(pool.workers()) == ["gcam-0", "gcam-1", "gcam-2"]
    assert pool.scale_to(3) == [] and len(backend.starts) == 1


def test_scale_down_takes_owed_then_unstarted_then_idle_then_busy(backend, clock):
    pool = backend.add_pool("gcam", clock)
    pool.scale_to(4)
    s = backend.scheduler
    s.connect("gcam-0", busy=1)
    s.connect("gcam-1")
    s.connect("gcam-2", busy=2)
    pool.owed.append(clock.now)
    assert pool.target == 5
    assert pool.scale_to(4) == [] and pool.owed == []  # the owed replacement goes first
    assert pool.scale_to(3) == ["gcam-3"]  # then the job never connected
    assert pool.scale_to(2) == ["gcam-1"]  # then an idle worker
    assert sorted(pool.scale_to(0)) == ["gcam-0", "gcam-2"]
    assert pool.target == 0 and backend.worker_spec == {}


def test_a_worker_holding_the_only_copy_of_a_result_stays_retiring_until_released(backend, clock):
    pool = backend.add_pool("gcam", clock)
    pool.scale_to(1)
    ws = backend.scheduler.connect("gcam-0", data=1)
    assert pool.scale_to(0) == ["gcam-0"]
    assert pool.target == 0 and pool.names() == []
    assert "gcam-0" in pool.retiring and "gcam-0" in backend.worker_spec  # its job stays
    run(pool.drain())
    assert "gcam-0" in pool.retiring  # still holds the result
    ws.has_what.clear()  # the user released it
    run(pool.drain())
    assert pool.retiring == {} and backend.worker_spec == {} and backend.workers == {}


def test_a_retiring_worker_leaves_once_another_worker_can_take_its_results(backend, clock):
    gcam, other = backend.add_pool("gcam", clock), backend.add_pool("stitches", clock)
    gcam.scale_to(1)
    backend.scheduler.connect("gcam-0", data=2)
    gcam.scale_to(0)
    assert "gcam-0" in gcam.retiring
    other.scale_to(1)
    theirs = backend.scheduler.connect("stitches-0")
    run(gcam.drain())
    assert gcam.retiring == {} and "gcam-0" not in backend.worker_spec
    assert theirs.has_what == {"key0", "key1"}  # the results moved, to any tag


def test_results_move_when_other_workers_exist_and_force_drops_them(backend, clock):
    pool = backend.add_pool("gcam", clock)
    pool.scale_to(2)
    backend.scheduler.connect("gcam-0", data=1)
    keeper = backend.scheduler.connect("gcam-1", data=2)
    assert pool.scale_to(1) == ["gcam-0"]  # the one with less to move
    assert pool.retiring == {} and keeper.has_what == {"key0", "key1"}
    calls = len(backend.scheduler.retire_calls)
    assert pool.scale_to(0, force=True) == ["gcam-1"]
    assert pool.retiring == {} and backend.worker_spec == {}
    assert len(backend.scheduler.retire_calls) == calls  # forced: no graceful retirement


def test_a_manual_scale_stops_adapt_and_adapt_scaling_does_not(backend, clock):
    pool = backend.add_pool("gcam", clock)
    stopped = []
    pool.adaptive = types.SimpleNamespace(
        stop=lambda reason: stopped.append(reason), minimum=0, maximum=math.inf
    )
    assert pool.adapt_range == {"minimum": 0, "maximum": None}
    run(pool.scale_to(2, asynchronous=True, manual=False))
    assert stopped == [] and pool.adaptive is not None
    pool.scale_to(1)
    assert stopped and pool.adaptive is None and pool.adapt_range is None


def test_stranded_tasks_are_said_when_the_target_is_zero(backend, clock):
    pool = backend.add_pool("gcam", clock)
    assert pool.stranded_warning(0) is None
    text = pool.stranded_warning(3)
    assert "3 task(s) wait for tag 'gcam'" in text and "cluster.add_workers('gcam', 1)" in text
    pool.scale_to(1)
    assert pool.stranded_warning(3) is None
    with pytest.warns(UserWarning, match="wait for tag 'gcam'"):
        pool.scale_to(0)
        pool.warn_if_stranded(2)
    # adapting at 0 workers is not stranded: adapt starts workers for them, unless it may not
    pool.adaptive = types.SimpleNamespace(stop=lambda reason: None, minimum=0, maximum=5)
    assert pool.target == 0 and pool.stranded_warning(3) is None
    pool.adaptive.maximum = 0
    assert "3 task(s) wait for tag 'gcam'" in pool.stranded_warning(3)


# -- recovery through the pools ---------------------------------------------------------------
def watcher(backend, clock):
    w = Watcher(backend, clock=clock)
    w.max_failures, w.backoff_max, w.lead = 3, 60, 10
    return w


def test_a_lost_worker_is_replaced_in_one_burst(backend, clock):
    pool = backend.add_pool("gcam", clock)
    pool.scale_to(2)
    for name in ("gcam-0", "gcam-1"):
        backend.scheduler.connect(name)
    w = watcher(backend, clock)
    run(w.check())
    assert set(pool.seen) == {"gcam-0", "gcam-1"}
    del backend.scheduler.workers["tcp://gcam-1"]
    backend.live.discard("job-gcam-1")
    run(w.check())
    assert sorted(pool.names()) == ["gcam-0", "gcam-2"] and pool.target == 2
    assert backend.starts[-1] == ["gcam-2"] and w.replaced == 1


def test_failed_starts_back_off_then_give_up_with_the_tags_error(backend, clock):
    pool = backend.add_pool("gcam", clock)
    pool.scale_to(1)
    w = watcher(backend, clock)
    for attempt in (1, 2):
        job = next(iter(pool.workers().values()))
        backend.live.discard(job.job_id)  # ended before connecting
        run(w.check())
        assert pool.failures == attempt and pool.owed == [clock.now + 2.0**attempt]
        assert pool.target == 1  # the replacement is still owed
        clock.now += 2.0**attempt
        run(w.check())
        assert pool.owed == [] and len(pool.workers()) == 1
    job = next(iter(pool.workers().values()))
    backend.live.discard(job.job_id)
    with pytest.warns(RuntimeWarning, match="3 workers of tag 'gcam' in a row"):
        run(w.check())
    assert pool.error and pool.target == 0 and pool.owed == []
    pool.scale_to(1)  # asking again forgets the past
    assert pool.error is None and pool.failures == 0 and pool.target == 1


def test_rollover_starts_the_next_worker_before_the_lifetime_ends(clock):
    backend = FakeBackend(lifetime=100)
    pool = backend.add_pool("gcam", clock)
    pool.scale_to(1)
    backend.scheduler.connect("gcam-0")
    w = watcher(backend, clock)
    run(w.check())
    clock.now += 85
    run(w.check())
    assert pool.replaced == set()
    clock.now += 10
    run(w.check())
    assert pool.replaced == {"gcam-0"} and pool.names() == ["gcam-1"] and pool.target == 1


def test_a_refused_replacement_is_retried_later(backend, clock):
    pool = backend.add_pool("gcam", clock)
    pool.scale_to(1)
    backend.scheduler.connect("gcam-0")
    w = watcher(backend, clock)
    run(w.check())
    del backend.scheduler.workers["tcp://gcam-0"]
    backend.live.clear()
    backend.refuse = True
    run(w.check())
    assert pool.failures == 1 and pool.owed == [clock.now + 2.0]


# -- adapt decisions ---------------------------------------------------------------------------
def adaptive(pool, **kw):
    return TagAdaptive(pool, interval=0, wait_count=1, target_duration=5, **kw)


def test_demand():
    assert demand(0, 0, 1, 5) == 0
    assert demand(1, 0.1, 1, 5) == 1  # any task wants a worker
    assert demand(100, 50, 1, 5) == 10  # 50 s of work in about 5 s
    assert demand(4, 500, 1, 5) == 4  # never more workers than tasks
    assert demand(100, 50, 2, 5) == 5  # threads per worker count


def test_adapt_target_counts_only_the_tags_own_tasks(backend, clock):
    pool = backend.add_pool("gcam", clock)
    s = backend.scheduler
    s._get_prefix_duration = lambda prefix: prefix
    for _ in range(6):
        s.unrunnable[TS("gcam", 2.0)] = 0
    s.unrunnable[TS("other", 100.0)] = 0
    a = adaptive(pool, minimum=0, maximum=4)
    assert run(a.target()) == 3  # 12 s of gcam work, about 5 s wanted
    assert run(a.safe_target()) == 3
    s.unrunnable = {TS("gcam", 60.0): 0 for _ in range(10)}
    assert run(a.safe_target()) == 4  # capped at the maximum


def test_adapt_grows_through_scale_to_and_shrinks_idle_workers_of_its_tag(backend, clock):
    pool = backend.add_pool("gcam", clock)
    other = backend.add_pool("stitches", clock)
    other.scale_to(1)
    backend.scheduler.connect("stitches-0")
    a = adaptive(pool, minimum=1, maximum=3)
    pool.adaptive = a
    rec = run(a.recommendations(3))
    assert rec == {"status": "up", "n": 3}
    run(a.scale_up(3))
    assert backend.starts[-1] == ["gcam-0", "gcam-1", "gcam-2"]  # one burst
    assert pool.adaptive is a  # adapt is not "manual"
    backend.scheduler.connect("gcam-0", busy=1)
    backend.scheduler.connect("gcam-1")
    backend.scheduler.connect("gcam-2")
    rec = run(a.recommendations(1))
    assert rec["status"] == "down" and sorted(rec["workers"]) == ["gcam-1", "gcam-2"]
    run(a.scale_down(rec["workers"]))
    assert pool.names() == ["gcam-0"] and other.names() == ["stitches-0"]


def test_adapt_refuses_a_range_that_is_not_one(backend, clock):
    pool = backend.add_pool("gcam", clock)
    with pytest.raises(ValueError, match="minimum=5 is more than maximum=2"):
        adaptive(pool, minimum=5, maximum=2)
    with pytest.raises(ValueError, match="maximum=2.5 must be a whole number"):
        adaptive(pool, minimum=0, maximum=2.5)
