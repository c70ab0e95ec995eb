"""Load scalable's defaults into ``dask.config``.

Every setting lives under the ``scalable`` key: ``dask.config.get("scalable.slurm.walltime")``.
The defaults ship in ``scalable.yaml`` beside this module; users override them in
``~/.config/dask/scalable.yaml`` (written there once, commented, for reference) or with keyword
arguments, which always win.
"""

from __future__ import annotations

import os

import dask
import yaml

_MISSING = object()


def reconfigure() -> None:
    """Merge the packaged defaults into ``dask.config`` (idempotent)."""
    fn = os.path.join(os.path.dirname(__file__), "scalable.yaml")
    # ensure_file never overwrites an existing user file, and silently skips read-only homes.
    dask.config.ensure_file(source=fn)
    with open(fn) as f:
        defaults = yaml.safe_load(f)
    dask.config.update_defaults(defaults)


def get(key: str, value=_MISSING, default=None):
    """Return ``value`` unless it is ``None``/missing, else ``dask.config`` ``scalable.<key>``.

    Examples
    --------
    >>> get("slurm.walltime", "02:00:00")
    '02:00:00'
    >>> get("container.runtime")
    'apptainer'
    """
    if value is not _MISSING and value is not None:
        return value
    return dask.config.get(f"scalable.{key}", default=default)


reconfigure()
