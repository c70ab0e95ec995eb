"""``ScalableClient``: a Dask client whose ``submit``/``map`` take ``tag=``."""

from __future__ import annotations

from dask.base import tokenize
from dask.utils import funcname
from distributed import Client

from .tagged import UnknownTagError

#: keyword arguments of Client.submit that are not passed on to the function
_CLIENT_KWARGS = {
    "key",
    "workers",
    "resources",
    "retries",
    "priority",
    "fifo_timeout",
    "allow_other_workers",
    "actor",
    "actors",
    "pure",
}


class ScalableClient(Client):
    """A :class:`distributed.Client` that routes tasks to a tag's workers.

    ``tag="gcam"`` becomes the resource restriction ``{"gcam": 1}``: the task runs only on
    workers of that tag, one task per worker at a time unless the worker offers more.

    Parameters
    ----------
    cluster : SlurmCluster or LocalCluster or str
        The cluster (or a scheduler address; then tags are not checked locally).
    **kwargs
        Passed to :class:`distributed.Client`.

    Examples
    --------
    >>> client = ScalableClient(cluster)                           # doctest: +SKIP
    >>> fut = client.submit(run_gcam, "ssp245", tag="gcam")  # doctest: +SKIP
    >>> futs = client.map(run_stitches, [1, 2, 3], tag="stitches")  # doctest: +SKIP
    """

    def __init__(self, cluster=None, *args, **kwargs):
        self._tagged_cluster = cluster if hasattr(cluster, "containers") else None
        super().__init__(cluster, *args, **kwargs)

    def _resources_for(self, tag, n, kwargs, call):
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(
                f"{call}(..., n={n!r}): n is the number of workers per task; "
                f"leave it out or pass n=1."
            )
        if n > 1:
            fix = (
                "give the container more cpus instead (cluster.add_container(tag, cpus=...)): "
                "a task's threads are its worker's cpus"
            )
            if call == "submit":
                fix += ", or run several tasks with client.map(func, inputs, tag=...)"
            raise ValueError(
                f"{call}(..., n={n}) asks for {n} workers per task, which scalable does not "
                f"do: each task runs on one worker of its tag; pass n=1 (or leave it out), "
                f"or {fix}."
            )
        if tag is None:
            return kwargs
        if "resources" in kwargs:
            raise TypeError("pass either tag= or resources=, not both.")
        cluster = self._tagged_cluster
        if cluster is not None:
            if tag not in cluster.containers:
                raise UnknownTagError(
                    f"tag {tag!r} is not a container of this cluster (it has "
                    f"{cluster._known_tags()}): call cluster.add_container(tag={tag!r}, ...) "
                    f"or fix the tag."
                )
            cluster.warn_if_no_workers(tag)
        return dict(kwargs, resources={tag: 1})

    def submit(self, func, *args, tag=None, n=1, **kwargs):
        """Like :meth:`distributed.Client.submit`; ``tag=`` picks the workers.

        ``n=1`` (the original scalable's workers per task) is accepted; more is refused.
        Tags are case-insensitive.

        Examples
        --------
        >>> client.submit(pow, 2, 10, tag="gcam").result()  # doctest: +SKIP
        1024
        """
        tag = _lower(tag)
        kwargs = self._resources_for(tag, n, kwargs, "submit")
        if tag is not None and kwargs.get("key") is None and kwargs.get("pure", True):
            # the same call sent to two tags is two different results: the tag is in the key
            fkw = {k: v for k, v in kwargs.items() if k not in _CLIENT_KWARGS}
            kwargs["key"] = f"{funcname(func)}-{tag}-{tokenize(func, fkw, tag, *args)}"
        return super().submit(func, *args, **kwargs)

    def map(self, func, *iterables, tag=None, n=1, **kwargs):
        """Like :meth:`distributed.Client.map`; ``tag=`` picks the workers (``n=1`` as
        :meth:`submit`)."""
        tag = _lower(tag)
        kwargs = self._resources_for(tag, n, kwargs, "map")
        if tag is not None and kwargs.get("key") is None:
            kwargs["key"] = f"{funcname(func)}-{tag}"  # a prefix: keys differ per tag
        return super().map(func, *iterables, **kwargs)


def _lower(tag):
    """Tags are case-insensitive, as in the original scalable."""
    return tag.lower() if isinstance(tag, str) else tag
