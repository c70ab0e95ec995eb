"""What a cluster backend (Slurm, local) gives its tag pools, declared in one place."""

from __future__ import annotations


class PoolBackend:
    """What a backend (Slurm, local) gives its tag pools.

    :class:`scalable.tagged.TaggedCluster` is one; a backend overrides what differs, the way a
    dask-jobqueue ``Job`` subclass sets ``submit_command`` and friends. Besides these hooks a
    pool uses the SpecCluster's own ``worker_spec``, ``workers``, ``scheduler``, ``loop``,
    ``sync``, ``_correct_state`` and ``last_error``.
    """

    #: workers per worker_spec entry (one Slurm job may pack several)
    workers_per_spec = 1
    #: seconds to wait for more add_workers calls before starting workers
    start_delay = 0.0
    #: whether add_container insists on an image file (Slurm: yes; local: only if path= given)
    require_image = True

    def _worker_spec(self, tag, name) -> dict:
        """The ``worker_spec`` entry of a new worker ``name`` of ``tag``."""
        raise NotImplementedError

    async def _start_new(self, names, raise_errors=False) -> list:
        """Start the ``worker_spec`` entries ``names`` (one submission for a burst); a failed
        start leaves nothing behind and raises when ``raise_errors``."""
        raise NotImplementedError

    async def _jobs_async(self, fresh=False) -> list:
        """This cluster's jobs: dicts with job_id, name, tag, state, reason, node."""
        raise NotImplementedError

    def _job_alive(self, worker, live_ids) -> bool:
        """Whether ``worker``'s job is among the jobs the last query found."""
        job_id = getattr(worker, "job_id", None)
        if job_id is not None:
            return job_id in live_ids
        return getattr(worker, "running", True)

    def _failure_detail(self, worker) -> str:
        """What the user should read about a worker that failed to start (its log's end)."""
        return ""

    def _start_refusal(self, worker) -> str | None:
        """Why a worker that ended before connecting can never start (one sentence), or None."""
        return None

    def _ended_outside(self, worker) -> bool:
        """Whether the worker's job was ended from outside before its worker could connect
        (cancelled while pending or starting, preempted): then it is no failed start."""
        return False

    def _lifetime_seconds(self, tag=None):
        """How long a worker of ``tag`` lives before it retires (None: until closed)."""

    def _has_job_prologue(self, tag=None) -> bool:
        """Whether workers start after lines of the user's (which may load the runtime)."""
        return False
