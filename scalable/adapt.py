"""Per-tag adaptive scaling on distributed's :class:`~distributed.deploy.adaptive.Adaptive`.

Each tag adapts on its own: its target comes from its own demand (tasks waiting for its
resource, and how long tasks of their kind take), it closes only its own idle workers, and it
scales through its pool's :meth:`~scalable.pool.TagPool.scale_to`, so a burst is still one
``sbatch --array`` and a scale-down still moves results before workers leave.

Examples
--------
>>> cluster.adapt(tag="gcam", minimum=0, maximum=10)     # doctest: +SKIP
>>> cluster.tag_status()["gcam"]["adapt"]                 # doctest: +SKIP
{'minimum': 0, 'maximum': 10}
"""

from __future__ import annotations

import math

from distributed.deploy.adaptive import Adaptive

#: seconds assumed for a task of a kind never run yet (Dask's own default guess)
UNKNOWN_DURATION = 0.5


def adapt_text(adapt) -> str:
    """A tag's adapt range as the panel and ``%scalable status`` show it.

    Examples
    --------
    >>> adapt_text({"minimum": 0, "maximum": 10}), adapt_text({"minimum": 2, "maximum": None})
    ('0-10', '2-')
    >>> adapt_text(None)
    ''
    """
    if not adapt:
        return ""
    return f"{adapt['minimum']}-{'' if adapt['maximum'] is None else adapt['maximum']}"


def demand(tasks, durations, threads, target_duration) -> int:
    """Workers needed to run ``tasks`` within about ``target_duration`` seconds.

    Parameters
    ----------
    tasks : int
        Tasks waiting for the tag or running on it.
    durations : float
        Their expected total duration, seconds.
    threads : int
        Threads per worker.
    target_duration : float
        How long the work should take.

    Examples
    --------
    >>> demand(0, 0, 1, 5), demand(3, 1.5, 1, 5), demand(40, 100, 1, 5), demand(40, 100, 4, 5)
    (0, 1, 20, 5)
    """
    if not tasks:
        return 0
    slots = min(tasks, max(1, math.ceil(durations / max(target_duration, 1e-9))))
    return max(1, math.ceil(slots / max(1, threads)))


class TagAdaptive(Adaptive):
    """Adaptive scaling of one tag's pool.

    Parameters
    ----------
    pool : scalable.pool.TagPool
        The tag's pool.
    minimum, maximum : int
        The range of workers.
    **kwargs
        ``interval``, ``wait_count``, ``target_duration`` as for Dask's ``Adaptive``.
    """

    def __init__(self, pool, minimum=0, maximum=math.inf, **kwargs):
        self.state = "inactive"  # until Adaptive starts it (its __del__ reads it)
        for what, value in (("minimum", minimum), ("maximum", maximum)):
            if not (
                value == math.inf
                or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)
            ):
                raise ValueError(
                    f"{what}={value!r} must be a whole number of workers, e.g. "
                    f"cluster.adapt(tag={pool.tag!r}, minimum=0, maximum=10)."
                )
        if minimum > maximum:
            raise ValueError(
                f"minimum={minimum} is more than maximum={maximum}: e.g. "
                f"cluster.adapt(tag={pool.tag!r}, minimum=0, maximum=10)."
            )
        self.pool = pool
        super().__init__(pool.backend, minimum=minimum, maximum=maximum, **kwargs)

    # -- what the pool has, in worker names (Adaptive's plan / requested / observed) ---------
    def _expand(self, spec_names) -> set:
        group = [f"-{i}" for i in range(self.pool.per_spec)] if self.pool.per_spec > 1 else [""]
        return {f"{name}{g}" for name in spec_names for g in group}

    @property
    def plan(self) -> set:
        owed = {f"{self.pool.tag}-owed{i}" for i in range(len(self.pool.owed) * self.pool.per_spec)}
        return self._expand(self.pool.names()) | owed

    @property
    def requested(self) -> set:
        started = set(self.pool.workers())
        return self._expand(n for n in self.pool.names() if n in started)

    @property
    def observed(self) -> set:
        leaving = set(self.pool.retiring) | self.pool.replaced
        return {
            str(ws.name)
            for name, wss in self.pool.connected().items()
            if name not in leaving
            for ws in wss
        }

    # -- decisions --------------------------------------------------------------------------
    async def target(self) -> int:
        s = self.pool.backend.scheduler
        tag = self.pool.tag
        waiting = [ts for ts in s.unrunnable if (ts.resource_restrictions or {}).get(tag)]
        running = [
            ts for ws in s.workers.values() if tag in (ws.resources or {}) for ts in ws.processing
        ]
        tasks = waiting + running
        durations = sum(self._duration(s, ts) for ts in tasks)
        return demand(len(tasks), durations, self.pool.spec.cpus, self.target_duration)

    @staticmethod
    def _duration(scheduler, ts) -> float:
        try:
            d = scheduler._get_prefix_duration(ts.prefix)
        except AttributeError:  # a scheduler without the helper: Dask's own guess
            d = -1
        return UNKNOWN_DURATION if d is None or d < 0 else d

    async def recommendations(self, target: int) -> dict:
        # Adaptive's version first waits for the whole cluster's specs to start; a tag
        # only looks at its own pool
        return await super(Adaptive, self).recommendations(target)

    async def workers_to_close(self, target: int) -> list:
        """Idle workers of this tag only: those holding nothing first; those holding
        results only while other workers exist to take them."""
        leaving = set(self.pool.retiring) | self.pool.replaced
        mine = [
            ws for name, wss in self.pool.connected().items() if name not in leaving for ws in wss
        ]
        idle = sorted((ws for ws in mine if not ws.processing), key=lambda ws: ws.nbytes)
        n = max(0, len(mine) - target)
        chosen = idle[:n]
        others = len(self.pool.backend.scheduler.workers) - len(chosen)
        return [str(ws.name) for ws in chosen if not ws.has_what or others > 0]

    async def scale_up(self, n):
        await self.pool.scale_to(
            max(n, self.pool.target), asynchronous=True, manual=False, wait=False
        )

    async def scale_down(self, workers):
        names = {self.pool.spec_name(w) for w in workers}
        for _ in [w for w in names if "-owed" in w]:  # replacements not submitted yet
            if self.pool.owed:
                self.pool.owed.pop()
        chosen = [n for n in names if n in self.pool.backend.worker_spec]
        if chosen:
            await self.pool._leave(chosen)


class AdaptiveTags:
    """Mixin of :class:`scalable.tagged.TaggedCluster`: ``adapt`` per tag, never untagged."""

    def adapt(self, tag=None, minimum=0, maximum=math.inf, **kwargs):
        """Scale ``tag``'s workers from its own demand, between ``minimum`` and ``maximum``.

        Each tag adapts on its own (see :mod:`scalable.adapt`): it grows while tasks wait for
        it and shrinks, gracefully, when its workers idle. Without ``tag`` every tag adapts
        with the same range. Scaling a tag by hand turns its adapt off.

        Returns
        -------
        scalable.adapt.TagAdaptive, or a dict of them by tag when ``tag`` is None

        Examples
        --------
        >>> cluster.adapt(tag="gcam", minimum=0, maximum=10)  # doctest: +SKIP
        """
        for old in (
            "minimum_jobs",
            "maximum_jobs",
            "minimum_memory",
            "maximum_memory",
            "minimum_cores",
            "maximum_cores",
            "Adaptive",
        ):
            if old in kwargs:
                raise TypeError(
                    f"adapt takes workers per tag, not {old}=: write "
                    f"cluster.adapt(tag='gcam', minimum=0, maximum=10)."
                )
        if tag is None:
            if not self.pools:
                raise ValueError(
                    "this cluster has no containers to adapt yet: call "
                    "cluster.add_container(tag='gcam', ...) first, then "
                    "cluster.adapt(tag='gcam', minimum=0, maximum=10)."
                )
            return {t: pool.adapt(minimum, maximum, **kwargs) for t, pool in self.pools.items()}
        return self.pool(tag).adapt(minimum, maximum, **kwargs)

    def stop_adapt(self, tag=None):
        """Turn adapt off for ``tag`` (every tag when None); workers stay as they are."""
        pools = self.pools.values() if tag is None else [self.pool(tag)]
        for pool in pools:
            pool.stop_adapt("stopped by the user")

    @property
    def new_spec(self):
        # SpecCluster.scale/adapt would add untagged copies of it: every worker has a tag
        raise AttributeError(
            "a scalable cluster has no untagged worker spec: add workers per "
            "tag, e.g. cluster.add_workers('gcam', 2)"
        )

    @new_spec.setter
    def new_spec(self, value):
        pass  # SpecCluster's constructor sets it; scalable makes every spec per tag

    _supports_scaling = True  # per tag, through the pools
