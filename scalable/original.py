"""The original scalable's ``SlurmCluster`` keywords, and what each becomes here.

Scripts written for the original (JGCRI scalable 0.6 to 1.0) pass keywords this design does
not need in the same form. Each one either keeps its meaning (``logs_location``,
``suppress_logs``, ``worker_env_vars``, ``cpus``, ``memory``, ``run_scripts_path``,
``use_run_scripts``) or, where scalable replaced the mechanism behind it (``comm_port``,
``config_overwrite``), is accepted with a note, shown once per process, naming the
replacement. None is dropped silently.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

from .containers import ContainerError, inside_path

#: keywords whose mechanism scalable replaced -> what replaced it
REPLACED = {
    "comm_port": (
        "the communicator and its port are replaced by scalable's host command relay, which "
        "the kernel launcher (and `scalable python`) starts on a private Unix socket; the "
        "value is not used"
    ),
    "config_overwrite": (
        "scalable writes no config_dict.yaml: containers come from add_container() and the "
        "scalable.containers config, and images default to <work_dir>/containers/"
        "<tag>_container.sif; the value is not used"
    ),
}

_noted: set = set()


def _note(key, replacement, stacklevel=4):
    if key not in _noted:
        _noted.add(key)
        warnings.warn(
            f"{key} is accepted for scripts written for the original scalable, but {replacement}.",
            OriginalKeywordNote,
            stacklevel=stacklevel,
        )


class OriginalKeywordNote(UserWarning):
    """A keyword of the original scalable that is accepted but replaced here."""


@dataclass
class OriginalOptions:
    """The original's keywords as scalable settings.

    Attributes
    ----------
    log_directory : str or None
        ``logs_location``: where job logs go.
    quiet_workers : bool
        ``suppress_logs``: workers log errors only.
    worker_env : dict
        ``worker_env_vars``: environment of every tag's container (a tag's ``env`` wins).
    defaults : dict
        ``cpus``/``memory``: per-worker sizes of containers that do not give their own.
    run_scripts_path : str or None
        Directory of ``<tag>_script.sh`` run scripts (relative to the work directory).
    use_run_scripts : bool or None
        True: every tag must have one; False: none is used; None: used where present.
    """

    log_directory: str | None = None
    quiet_workers: bool = False
    worker_env: dict = field(default_factory=dict)
    defaults: dict = field(default_factory=dict)
    run_scripts_path: str | None = None
    use_run_scripts: bool | None = None


def take_original_keywords(kwargs: dict, log_directory=None) -> OriginalOptions:
    """Remove the original's keywords from ``kwargs`` and return them as settings.

    Raises ``ValueError`` (one sentence, before anything starts) for values that cannot
    work, e.g. ``logs_location`` that contradicts ``log_directory``.
    """
    opts = OriginalOptions()
    for key, replacement in REPLACED.items():
        if key in kwargs:
            kwargs.pop(key)
            _note(f"SlurmCluster({key}=...)", replacement)
    if "job_cls" in kwargs:
        raise TypeError(
            "job_cls is not supported: scalable's workers are its own Slurm jobs "
            "(one sbatch or job array per burst); leave job_cls out."
        )
    logs = kwargs.pop("logs_location", None)
    if logs is not None and log_directory is not None and logs != log_directory:
        raise ValueError(
            f"logs_location={logs!r} and log_directory={log_directory!r} name the "
            f"same setting: pass only one of them."
        )
    opts.log_directory = logs if logs is not None else log_directory
    opts.quiet_workers = bool(kwargs.pop("suppress_logs", False))
    env = kwargs.pop("worker_env_vars", None) or {}
    if not isinstance(env, dict):
        raise TypeError(
            f"worker_env_vars={env!r} must be a dict of environment variables, "
            f"e.g. worker_env_vars={{'OMP_NUM_THREADS': '1'}}."
        )
    opts.worker_env = {str(k): str(v) for k, v in env.items()}
    opts.defaults = {k: kwargs.pop(k) for k in ("cpus", "memory") if kwargs.get(k) is not None}
    kwargs.pop("cpus", None)
    kwargs.pop("memory", None)
    opts.run_scripts_path = kwargs.pop("run_scripts_path", None)
    use = kwargs.pop("use_run_scripts", None)
    opts.use_run_scripts = None if use is None else bool(use)
    return opts


def worker_env(opts: OriginalOptions, spec_env: dict) -> dict:
    """The environment a tag's workers get: ``worker_env_vars``, then the tag's own ``env``."""
    env = dict(opts.worker_env)
    if opts.quiet_workers:
        # suppress_logs: the worker logs errors only; a failed start still shows why
        env.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    env.update(spec_env)
    return env


def run_script(opts: OriginalOptions, spec, work_dir: str) -> str | None:
    """The run script of ``spec.tag`` as the container sees it, or None.

    ``<run_scripts_path>/<tag>_script.sh`` (default ``<work_dir>/run_scripts``) wraps the
    worker command inside the container, as in the original: ``<script> python -m ...``. It
    must be an executable file; outside the work directory and the binds it is bound in at
    its own path (added to ``spec.dirs``).
    """
    if opts.use_run_scripts is False or spec.image is None:
        return None
    folder = os.path.join(work_dir, os.path.expanduser(opts.run_scripts_path or "run_scripts"))
    host = os.path.abspath(os.path.join(folder, f"{spec.tag}_script.sh"))
    if not os.path.isfile(host):
        if opts.use_run_scripts:
            raise ContainerError(
                f"container {spec.tag!r}: use_run_scripts=True but there is no run script "
                f"{host!r}: create it (it is run as `<script> python -m distributed.cli."
                f"dask_worker ...` inside the container) or pass use_run_scripts=False."
            )
        return None
    if not os.access(host, os.X_OK):
        raise ContainerError(
            f"container {spec.tag!r}: run script {host!r} is not executable: "
            f"chmod +x it (it runs as `<script> python -m ...`)."
        )
    return inside_path(spec.tag, "run script", host, work_dir, spec.dirs)


def set_default_request_quantity(nodes):
    """The original's ``SlurmCluster.set_default_request_quantity``: accepted with a note.

    The original allocated ``nodes`` nodes at a time for its workers to share; scalable
    submits one job per worker (a job array per burst), so there is nothing to set.
    """
    _note(
        "SlurmCluster.set_default_request_quantity()",
        "scalable allocates no nodes for workers to share: each worker is a Slurm job of "
        "its container's size (workers_per_job=k packs k workers into one job)",
        3,
    )
