"""scalable: run functions inside each model's container on tagged Dask workers.

Examples
--------
>>> from scalable import SlurmCluster, ScalableClient        # doctest: +SKIP
>>> cluster = SlurmCluster(queue="slurm", walltime="02:00:00", account="GCIMS", interface="ib0")  # doctest: +SKIP
>>> cluster.add_container("gcam", {"/rcfs": "/rcfs"}, cpus=10, memory="20G")  # doctest: +SKIP
>>> cluster.add_workers("gcam", 3)  # doctest: +SKIP
>>> client = ScalableClient(cluster)  # doctest: +SKIP
>>> client.submit(run_gcam, "scenario", tag="gcam").result()  # doctest: +SKIP
"""

from importlib import import_module

from . import config as _config  # noqa: F401  (loads the defaults into dask.config)

__version__ = "0.1.0"

# Heavy modules load on first use, so the CLI, the relay shims and the kernel launcher start fast.
_LAZY = {
    "SlurmCluster": "scalable.slurm",
    "ScalableClient": "scalable.client",
    "LocalCluster": "scalable.local",
    "ContainerSpec": "scalable.containers",
    "ContainerError": "scalable.containers",
    "CommandError": "scalable.runner",
    # names the original scalable's users import with `from scalable import *`
    "get_worker": "distributed",
    "Security": "distributed",
    "JobQueueCluster": "scalable.jobqueue",  # imported there, leaving signal handlers as found
}

# @cacheable and its argument types, as the original exported them (scalable.caching)
_LAZY.update(
    {
        name: "scalable.caching"
        for name in (
            "cacheable",
            "GenericType",
            "FileType",
            "DirType",
            "ValueType",
            "ObjectType",
            "UtilityType",
        )
    }
)

# `from scalable import *` gives exactly what the original scalable's users imported that way.
__all__ = [
    "DirType",
    "FileType",
    "GenericType",
    "JobQueueCluster",
    "ObjectType",
    "ScalableClient",
    "Security",
    "SlurmCluster",
    "UtilityType",
    "ValueType",
    "cacheable",
    "get_worker",
]


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'scalable' has no attribute {name!r}")


def load_ipython_extension(ipython):
    """``%load_ext scalable``: register the ``%scalable`` magics."""
    from .jupyter.magics import load_ipython_extension as _load

    _load(ipython)


def _jupyter_server_extension_points():
    return [{"module": "scalable.jupyter.serverext"}]


def _jupyter_labextension_paths():
    return [{"src": "labextension", "dest": "scalable"}]
