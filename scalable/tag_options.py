"""A tag's own Slurm options: partition, account, walltime, GPUs, extra directives, prologue.

``add_container(..., queue=, account=, walltime=, gpus=, job_extra_directives=,
job_script_prologue=)`` (or the same keys under ``scalable.containers.<tag>``) override the
cluster's options for that tag's jobs only. They are checked here, before anything is submitted.
"""

from __future__ import annotations

import re

from . import config
from .containers import ContainerError

#: the keywords, in the order add_container takes them
KEYS = ("queue", "account", "walltime", "gpus", "job_extra_directives", "job_script_prologue")


def walltime_seconds(walltime: str) -> int:
    """Slurm walltime (``[D-]HH:MM:SS``, ``MM:SS`` or minutes) in seconds.

    Examples
    --------
    >>> walltime_seconds("02:00:00"), walltime_seconds("1-00:00:00"), walltime_seconds("90")
    (7200, 86400, 5400)
    >>> walltime_seconds("0-6"), walltime_seconds("1-12:30")
    (21600, 131400)
    """
    text = str(walltime).strip()
    if "-" in text:  # D-H, D-H:M, D-H:M:S
        d, text = text.split("-", 1)
        hms = [int(p) for p in text.split(":")]
        if not 1 <= len(hms) <= 3:
            raise ValueError
        hms += [0] * (3 - len(hms))
        return int(d) * 86400 + hms[0] * 3600 + hms[1] * 60 + hms[2]
    parts = [int(p) for p in text.split(":")]
    if len(parts) == 1:
        return parts[0] * 60
    if len(parts) == 2:
        return parts[0] * 60 + parts[1]
    if len(parts) == 3:
        return parts[0] * 3600 + parts[1] * 60 + parts[2]
    raise ValueError


def check_walltime(walltime, fix="walltime='02:00:00'") -> str:
    """``walltime`` if Slurm reads it as a positive time, else a sentence saying how to write it."""
    try:
        if walltime_seconds(walltime) <= 0:
            raise ValueError
    except (ValueError, TypeError):
        raise ValueError(
            f"walltime={walltime!r} is not a Slurm time: write it as 'HH:MM:SS', e.g. {fix}."
        ) from None
    return str(walltime)


def gpu_directive(n: int) -> str:
    """The ``#SBATCH`` option asking for ``n`` GPUs (``scalable.slurm.gpu-directive``).

    Examples
    --------
    >>> gpu_directive(2)
    '--gpus=2'
    """
    return str(config.get("slurm.gpu-directive", default="--gpus={n}")).format(n=n)


def tag_options(tag, given: dict, preset: dict, slurm: bool) -> dict:
    """This tag's own job options: ``given`` (keywords) over ``preset`` (config), checked.

    Parameters
    ----------
    tag : str
    given : dict
        The keywords passed to ``add_container`` (None: not given).
    preset : dict
        ``scalable.containers.<tag>`` from the config.
    slurm : bool
        Whether the cluster submits jobs (a local cluster refuses these options).

    Returns
    -------
    dict
        Only the options set, e.g. ``{"queue": "debug", "gpus": 2}``.

    Examples
    --------
    >>> tag_options("gcam", {"queue": "debug", "gpus": 2}, {"walltime": "00:30:00"}, True)
    {'queue': 'debug', 'walltime': '00:30:00', 'gpus': 2}
    """
    out = {}
    for key in KEYS:
        value = given.get(key)
        if value is None:
            value = preset.get(key, preset.get(key.replace("_", "-")))
        if value is None:
            continue
        if not slurm:
            raise ContainerError(
                f"container {tag!r}: {key}= is a Slurm option and this cluster runs workers "
                f"locally: drop {key}=, or use a SlurmCluster."
            )
        out[key] = _check(tag, key, value)
    return out


def _check(tag, key, value):
    example = f"cluster.add_container({tag!r}, ..., {key}="
    if key in ("queue", "account"):
        if not isinstance(value, str) or not re.match(r"^[\w.+-]+$", value):
            raise ContainerError(
                f"container {tag!r}: {key}={value!r} is not a Slurm "
                f"{'partition' if key == 'queue' else 'account'} name: e.g. "
                f"{example}'debug')."
            )
        return value
    if key == "walltime":
        try:
            return check_walltime(value, fix=f"{example}'02:00:00')")
        except ValueError as e:
            raise ContainerError(f"container {tag!r}: {e}") from None
    if key == "gpus":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ContainerError(
                f"container {tag!r}: gpus={value!r} must be a whole number of "
                f"GPUs per worker, 1 or more: e.g. {example}1)."
            )
        return value
    if isinstance(value, str) or not all(isinstance(v, str) for v in value):
        raise ContainerError(
            f"container {tag!r}: {key} must be a list of lines, e.g. {example}['--qos=high'])."
        )
    return list(value)


#: words of an sbatch refusal -> the option to change
_REFUSED = (
    (re.compile(r"partition", re.IGNORECASE), "queue"),
    (re.compile(r"account|association", re.IGNORECASE), "account"),
    (re.compile(r"time limit|walltime", re.IGNORECASE), "walltime"),
    (re.compile(r"gres|gpu", re.IGNORECASE), "gpus"),
    (re.compile(r"memory|mem\b", re.IGNORECASE), "memory"),
    (re.compile(r"cpu|core", re.IGNORECASE), "cpus"),
)


def refused_option(said: str, options: dict) -> str:
    """Which option of a tag an ``sbatch`` refusal is about, as ``name='value'`` (or a list of
    what to check).

    Examples
    --------
    >>> refused_option("sbatch: error: invalid partition specified: nope", {"queue": "nope"})
    "queue='nope'"
    >>> refused_option("error: something else", {})
    'queue=, account=, walltime=, gpus= and the cpus/memory'
    """
    for pattern, key in _REFUSED:
        if pattern.search(said):
            return f"{key}={options[key]!r}" if key in options else f"{key}="
    return "queue=, account=, walltime=, gpus= and the cpus/memory"
