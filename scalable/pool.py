"""A tag's pool of workers: one object owns a tag's state, one ``scale_to`` changes it.

A :class:`TagPool` holds everything scalable knows about one tag: its container spec, its own
job options (partition, account, walltime, GPUs, ...), its worker names, its target, the
replacements it is owed, the workers retiring from it, its failure and backoff state and its
last error. :meth:`TagPool.scale_to` is the one way its size changes: ``add_workers``,
``remove_workers``, ``scale``, the REST scale route, the notebook panel, adapt and recovery all
go through it.

The cluster is the pool's backend: :class:`scalable.backend.PoolBackend` declares, in one
place, the hooks a backend (Slurm, local) gives its pools, as dask-jobqueue's ``Job`` does.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
import warnings

from distributed.core import Status

from . import config
from .recovery import HOPELESS_REASONS

logger = logging.getLogger(__name__)

#: Slurm states in which a job has not started its worker yet.
PENDING_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "RESIZING", "SUSPENDED"}


def tag_of(name) -> str:
    """The tag encoded in a worker or spec name (``gcam-3`` or, packed, ``gcam-3-1``).

    Tags never contain a dash, so the part before the first dash is the tag, exactly.

    Examples
    --------
    >>> tag_of("gcam-3"), tag_of("my_model-12-0")
    ('gcam', 'my_model')
    """
    return str(name).split("-", 1)[0]


def whole(n, example) -> int:
    """``n`` if it is a whole number of workers, else a sentence saying what to write."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n={n!r} must be a whole number of workers, e.g. {example}.")
    most = int(config.get("max-workers-per-tag"))
    if n > most:  # a typo, not a request: it would fill memory with worker specs
        raise ValueError(
            f"n={n} is more than scalable.max-workers-per-tag ({most}): ask for fewer, e.g. "
            f"{example}, or raise that setting if you truly need more."
        )
    return n


async def _value(value):
    return value


class TagPool:
    """The workers of one tag, and everything known about them.

    Parameters
    ----------
    tag : str
        The tag (lower case).
    spec : scalable.containers.ContainerSpec
        The container its workers run in.
    backend : scalable.backend.PoolBackend
        The cluster.
    options : dict, optional
        This tag's own job options (``queue``, ``account``, ``walltime``, ``gpus``, ...).
    clock : callable
        Monotonic seconds (tests pass a fake clock).

    Attributes
    ----------
    owed : list of float
        Due times of replacements not submitted yet.
    replaced : set
        Spec names whose replacement was already submitted (they retire at their lifetime).
    retiring : dict
        Spec names leaving the pool that still hold results no other worker has, with the time
        they started retiring; they leave once their data is released or moved.
    seen : dict
        Spec name -> time its worker first connected.
    failures, vanished : int
        Failed starts, and jobs ended from outside before starting, in a row.
    error : str or None
        Why scalable stopped starting workers of this tag.
    adaptive : scalable.adapt.TagAdaptive or None
        This tag's adaptive scaling, while on.
    """

    def __init__(self, tag, spec, backend, options=None, clock=time.monotonic):
        self.tag = tag
        self.spec = spec
        self.backend = backend
        self.options = dict(options or {})
        self.nanny = None  # the tag's own nanny= (None: the cluster's)
        self.clock = clock
        self._counter = itertools.count()
        self.owed: list = []
        self.replaced: set = set()
        self.retiring: dict = {}
        self.seen: dict = {}
        self.failures = 0
        self.vanished = 0
        self.error: str | None = None
        self.adaptive = None
        self.warned_empty = False

    def __repr__(self):
        return f"<TagPool {self.tag!r}: target {self.target}>"

    # -- what the pool has ------------------------------------------------------------------
    @property
    def per_spec(self) -> int:
        return self.backend.workers_per_spec

    def all_names(self) -> list:
        """Every spec name of this tag, retiring ones included."""
        # list() copies atomically: the event loop thread may change worker_spec meanwhile
        return [n for n in list(self.backend.worker_spec) if tag_of(n) == self.tag]

    def names(self) -> list:
        """Spec names counted in the target: not replaced ahead of their lifetime, not retiring."""
        return [n for n in self.all_names() if n not in self.replaced and n not in self.retiring]

    @property
    def target(self) -> int:
        """Workers asked for: current ones (not leaving) and replacements on their way."""
        return (len(self.names()) + len(self.owed)) * self.per_spec

    def workers(self) -> dict:
        """Started worker objects (jobs, processes) of this tag, by spec name."""
        return {n: w for n, w in list(self.backend.workers.items()) if tag_of(n) == self.tag}

    def spec_name(self, worker_name) -> str:
        """Spec entry a worker belongs to (a packed job's workers are ``<spec>-<i>``)."""
        name = str(worker_name)
        if name in self.backend.worker_spec or self.per_spec == 1:
            return name
        return name.rsplit("-", 1)[0]

    def connected(self) -> dict:
        """Connected workers of this tag: spec name -> [WorkerState]."""
        out = {}
        for ws in list(self.backend.scheduler.workers.values()):
            if tag_of(ws.name) == self.tag:
                out.setdefault(self.spec_name(ws.name), []).append(ws)
        return out

    def waiting_tasks(self) -> int:
        """Tasks that need this tag and wait: for a worker, or queued behind busy threads."""
        s = self.backend.scheduler
        mine = [ws for ws in s.workers.values() if self.tag in (ws.resources or {})]
        return sum(
            1 for ts in s.unrunnable if (ts.resource_restrictions or {}).get(self.tag)
        ) + sum(max(0, len(ws.processing) - ws.nthreads) for ws in mine)

    def new_name(self) -> str:
        return f"{self.tag}-{next(self._counter)}"

    def reset(self):
        """The user asked for workers again: forget past failures."""
        self.failures = self.vanished = 0
        self.error = None

    # -- the one way the size changes ---------------------------------------------------------
    def scale_to(self, n, *, wait=True, asynchronous=False, manual=True, force=False):
        """Ask for ``n`` workers of this tag.

        Parameters
        ----------
        n : int
            The new target.
        wait : bool
            Wait until new jobs are submitted (errors raise here); ``False`` returns at once
            and lets quick successive calls share one submission (errors land in
            ``cluster.last_error``).
        asynchronous : bool
            Return an awaitable (callers on the cluster's event loop).
        manual : bool
            A person asked (API, magics, panel, REST): this tag's adapt stops, as in Dask.
            Adapt and recovery pass ``False``.
        force : bool
            Remove workers at once even when they hold results no other worker has (those
            results are lost). By default such workers stay, retiring, until their results
            are released or can move.

        Returns
        -------
        list of str
            Spec names added, or removed (retiring ones included).
        """
        n = whole(n, "n=4")
        if manual and self.adaptive is not None:
            self.stop_adapt("the tag was scaled by hand")
        have = self.target
        if n > have:
            if manual:
                self.reset()
            new = self._add_specs(math.ceil((n - have) / self.per_spec))
            if asynchronous:
                return self.backend._start_new(new, wait)
            if not wait:
                self.backend.loop.add_callback(self.backend._start_new, new)
                return new
            return self.backend.sync(self.backend._start_new, new, True)
        if n < have:
            coro = self._shrink(have - n, force)
            return coro if asynchronous else self.backend.sync(lambda: coro)
        return _value([]) if asynchronous else []

    def _add_specs(self, count) -> list:
        # added at once, in the caller's thread, so that calls in quick succession are started
        # (and submitted) together by the next state correction
        new = {}
        for _ in range(count):
            name = self.new_name()
            new[name] = self.backend._worker_spec(self.tag, name)
        self.backend.worker_spec.update(new)
        return list(new)

    async def _shrink(self, n, force=False) -> list:
        """Remove ``n`` workers: owed replacements first, then jobs not started, then idle
        workers (holding the least data first), then busy ones (their tasks move elsewhere)."""
        n_specs = math.ceil(n / self.per_spec)
        while self.owed and n_specs:
            self.owed.pop()
            n_specs -= 1
        names = self.names()
        n_specs = min(len(names), n_specs)
        if not n_specs:
            return []
        connected = self.connected()
        order = sorted(
            names,
            key=lambda s: (
                s in connected,
                any(ws.processing for ws in connected.get(s, ())),
                sum(ws.nbytes for ws in connected.get(s, ())),  # less to move first
                -names.index(s),
            ),
        )
        chosen = order[:n_specs]
        await self._leave(chosen, force)
        return chosen

    async def _leave(self, chosen, force=False):
        """Let spec entries go; ones holding results nobody else has stay, retiring."""
        connected = self.connected()
        addresses = [ws.address for s in chosen for ws in connected.get(s, ())]
        retired = set()
        if addresses and not force:
            # graceful, as Dask retires: results held only by these workers move first
            retired = set(
                await self.backend.scheduler.retire_workers(
                    workers=addresses, close_workers=True, remove=True
                )
            )
        for name in chosen:
            kept = [
                ws
                for ws in connected.get(name, ())
                if ws.address not in retired and ws.has_what and not force
            ]
            if kept:  # nowhere to move its results: keep it until they are released
                self.retiring.setdefault(name, self.clock())
                continue
            self.retiring.pop(name, None)
            self.backend.worker_spec.pop(name, None)
        await self.backend._correct_state()

    async def drain(self):
        """Let retiring workers go once they hold nothing, or their results can move."""
        if not self.retiring:
            return
        connected = self.connected()
        others = any(
            ws.status == Status.running and self.spec_name(ws.name) not in self.retiring
            for ws in self.backend.scheduler.workers.values()
        )
        done = [
            name
            for name in list(self.retiring)
            if not any(ws.has_what or ws.processing for ws in connected.get(name, ()))
        ]
        movable = [name for name in self.retiring if name not in done] if others else []
        if done or movable:
            for name in done:
                self.retiring.pop(name, None)
            await self._leave(done + movable, force=False)

    def clear(self):
        """Forget every worker and replacement (the cluster scales to 0 or closes)."""
        self.owed.clear()
        self.replaced.clear()
        self.retiring.clear()
        for name in self.all_names():
            self.backend.worker_spec.pop(name, None)

    # -- adapt ------------------------------------------------------------------------------
    def adapt(self, minimum=0, maximum=math.inf, **kwargs):
        """Scale this tag from its own demand, between ``minimum`` and ``maximum``."""
        from .adapt import TagAdaptive

        self.stop_adapt("adapt called again")
        self.adaptive = TagAdaptive(self, minimum=minimum, maximum=maximum, **kwargs)
        return self.adaptive

    def stop_adapt(self, reason="stopped"):
        if self.adaptive is not None:
            self.adaptive.stop(reason=reason)
            self.adaptive = None

    @property
    def adapt_range(self):
        """``{"minimum": m, "maximum": M}`` while adapting, else None."""
        a = self.adaptive
        if a is None:
            return None
        return {"minimum": a.minimum, "maximum": None if math.isinf(a.maximum) else a.maximum}

    # -- status -----------------------------------------------------------------------------
    def status(self, jobs) -> dict:
        """This tag's line of ``tag_status()``, from one job query's ``jobs``."""
        s = self.backend.scheduler
        leaving = [
            ws for name, wss in self.connected().items() if name in self.retiring for ws in wss
        ]
        ws_list = [
            ws
            for ws in s.workers.values()
            if self.tag in (ws.resources or {}) and ws not in leaving
        ]
        busy = sum(1 for ws in ws_list if ws.processing)
        waiting = self.waiting_tasks()
        mine = [j for j in jobs if j["tag"] == self.tag]
        pending = sum(self.per_spec for j in mine if j["state"] in PENDING_STATES)
        return {
            "target": self.target,
            "pending": pending,
            # jobs Slurm runs whose worker has not connected yet
            "starting": max(0, self.target - pending - len(ws_list)),
            "running": len(ws_list),
            "busy": busy,
            "idle": len(ws_list) - busy,
            "retiring": len(leaving),  # leaving once their results are released or moved
            "waiting_tasks": waiting,
            # pending for reasons that never clear by waiting
            "stuck": sorted(
                {
                    j["reason"]
                    for j in mine
                    if j["state"] in PENDING_STATES and j["reason"] in HOPELESS_REASONS
                }
            ),
            "error": self.error,
            "warning": self.stranded_warning(waiting),
            "adapt": self.adapt_range,
            **self.options,
            **self.spec.describe(),
        }

    def warn_if_empty(self):
        """Warn once when tasks are sent to this tag and no worker is asked for."""
        if not self.warned_empty and not self.names() and self.adaptive is None:
            # (an adapting tag starts workers for them)
            self.warned_empty = True
            warnings.warn(
                f"tag {self.tag!r} has no workers yet: its tasks wait until you call "
                f"cluster.add_workers({self.tag!r}, 1).",
                stacklevel=4,
            )

    def stranded_warning(self, waiting) -> str | None:
        """A sentence when tasks wait for this tag and none of its workers are asked for (an
        adapting tag that may start some is not stranded: adapt asks for them)."""
        adapt = self.adapt_range
        if not waiting or self.target or (adapt and adapt["maximum"] != 0):
            return None
        return (
            f"{waiting} task(s) wait for tag {self.tag!r}, which has no workers: "
            f"cluster.add_workers({self.tag!r}, 1) runs them."
        )

    def warn_if_stranded(self, waiting, stacklevel=3):
        text = self.stranded_warning(waiting)
        if text:
            warnings.warn(text, stacklevel=stacklevel)
