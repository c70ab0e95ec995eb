"""dask-jobqueue's classes, imported in this one place so the import leaves signal handlers as
they were: its ``runner`` module (imported by its ``slurm`` module) replaces SIGINT's handler
with ``sys.exit()``, which would make Ctrl-C in a script exit with status 0."""

from .signals import preserved

with preserved():
    from dask_jobqueue import JobQueueCluster, SLURMCluster
    from dask_jobqueue.slurm import SLURMJob

__all__ = ["JobQueueCluster", "SLURMCluster", "SLURMJob"]
