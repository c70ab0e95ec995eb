"""Container specs: one per tag, validated before anything is submitted."""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

from dask.utils import format_bytes, parse_bytes

from . import config
from .runtimes import ContainerRuntime

#: Tags become Dask resource names, worker-name prefixes and Slurm job names, so they stay
#: simple; the dash is kept out because worker names are ``<tag>-<number>``.
TAG_RE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}")
_SLURM_UNIT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT])\s*", re.IGNORECASE)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Bounds of a worker's memory: below 1 MiB nothing runs (and Slurm counts in MiB); above
#: 1 PiB no node exists, so a larger number is a typo (``"1e100G"``).
MIN_MEMORY = 2**20
MAX_MEMORY = 2**50


class ContainerError(ValueError):
    """A container spec that cannot work, with a sentence saying what to change.

    Raised by ``add_container`` (and the checks behind it) before anything is submitted; it is
    a :class:`ValueError`, so ``except ValueError`` catches it too.

    Examples
    --------
    >>> try:
    ...     check_tag("gcam-v7")
    ... except ContainerError as e:
    ...     print(e)
    tag 'gcam-v7' is not valid: use letters, digits and underscores, starting with a letter, at most 32 characters (e.g. tag='gcam_v7').
    """


def check_tag(tag) -> str:
    """Return ``tag`` lower-cased if it is a valid tag, else raise :class:`ContainerError`.

    Tags are case-insensitive, as in the original scalable: ``"GCAM"`` is ``"gcam"``.

    Examples
    --------
    >>> check_tag("GCAM")
    'gcam'
    """
    if not isinstance(tag, str) or not TAG_RE.fullmatch(tag):
        suggestion = re.sub(r"[^A-Za-z0-9_]", "_", str(tag or "")) or "gcam"
        if not suggestion[0].isalpha():
            suggestion = "t" + suggestion
        raise ContainerError(
            f"tag {tag!r} is not valid: use letters, digits and underscores, starting with a "
            f"letter, at most 32 characters (e.g. tag={suggestion[:32].lower()!r})."
        )
    return tag.lower()


def parse_memory(memory, tag: str = "?") -> int:
    """Parse a memory size to bytes. Bare Slurm units (``20G``) are binary, as in Slurm.

    A size must be finite and between 1 MiB and 1 PiB: zero would mean "unlimited" to a
    local worker and nothing to Slurm.

    Examples
    --------
    >>> parse_memory("20G")
    21474836480
    >>> parse_memory("1.5 GB")
    1500000000
    """
    value = None
    if isinstance(memory, (int, float)) and not isinstance(memory, bool):
        value = memory
    elif isinstance(memory, str) and memory.strip():
        m = _SLURM_UNIT.fullmatch(memory)
        if m:
            value = float(m.group(1)) * 1024 ** ("KMGT".index(m.group(2).upper()) + 1)
        else:
            try:
                value = parse_bytes(memory)
            except (ValueError, TypeError, OverflowError):
                value = None
    if value is None or not math.isfinite(value) or not MIN_MEMORY <= value <= MAX_MEMORY:
        raise ContainerError(
            f"container {tag!r}: memory={memory!r} is not a size between 1 MiB and 1 PiB: "
            f"write it as Slurm does, e.g. memory='20G' or memory='512M'."
        )
    return int(value)


def _check_bind_path(tag, side, value, src, dst) -> None:
    """Refuse a bind path the runtime would split: ``--bind`` takes ``SRC:DST[,SRC:DST]``,
    so ``"/data,/etc:/stolen"`` would mount ``/etc``."""
    if not isinstance(value, (str, os.PathLike)):
        raise ContainerError(
            f"container {tag!r}: dirs maps {src!r} to {dst!r}, but both sides must be path "
            f"strings, e.g. dirs={{'/qfs/people/me/data': '/data'}}."
        )
    text = os.fspath(value)
    bad = [c for c in (",", ":", "\0") if c in text]
    if bad:
        shown = " and ".join("a NUL byte" if c == "\0" else repr(c) for c in bad)
        raise ContainerError(
            f"container {tag!r}: the {side} path {text!r} contains {shown}, which the container "
            f"runtime reads as a separator between binds: rename the directory or bind a parent "
            f"of it without {shown}."
        )


def check_work_dir(path: str) -> str:
    """Refuse a work directory that no job script or runtime can carry whole.

    Spaces and quotes are fine (every path is quoted); but the runtime reads ``,`` and ``:`` in
    ``--home``/``--bind`` as separators, Slurm reads ``\\`` in a log path as "no patterns", and a
    line break would end an ``#SBATCH`` line.

    Examples
    --------
    >>> check_work_dir("/work/my project's runs")
    "/work/my project's runs"
    """
    bad = [c for c in (",", ":", "\\", "\n", "\r", "\0") if c in path]
    if bad:
        raise ContainerError(
            f"work_dir {path!r} contains {' and '.join(map(repr, bad))}, which the container "
            f"runtime or Slurm would split the path at: use a directory without them, e.g. "
            f"work_dir='/path/to/work'."
        )
    return path


def slurm_memory(nbytes: int) -> str:
    """Format bytes for ``#SBATCH --mem``, rounding up to whole MiB.

    Examples
    --------
    >>> slurm_memory(21474836480)
    '20G'
    >>> slurm_memory(1500000000)
    '1431M'
    """
    mib = -(-nbytes // 2**20)
    return f"{mib // 1024}G" if mib % 1024 == 0 else f"{mib}M"


@dataclass
class ContainerSpec:
    """What a tag's workers run in and with.

    Parameters
    ----------
    tag : str
        The tag: a Dask resource name, e.g. ``"gcam"``.
    image : str
        Absolute path of the image (``.sif``), or None to run workers directly (local only).
    cpus : int
        CPUs per worker: ``--cpus-per-task`` and the worker's thread count.
    memory : int
        Bytes per worker: ``--mem`` and the worker's memory limit.
    dirs : dict
        Host path -> container path bind mounts.
    env : dict
        Environment variables set inside the container.
    preload : str, optional
        Dask preload each worker runs (``--preload``): a module name, or a file's path as
        the container sees it.

    Examples
    --------
    ``add_container`` makes one, checked, and returns it:

    >>> spec = ContainerSpec("gcam", "/work/containers/gcam_container.sif", cpus=4, memory=8 * 2**30)
    >>> spec.describe()["memory"], spec.cpus
    ('8G', 4)
    """

    tag: str
    image: str | None
    cpus: int = 1
    memory: int = 2**30
    dirs: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    preload: str | None = None

    @property
    def memory_text(self) -> str:
        return format_bytes(self.memory).replace(" ", "")

    def describe(self) -> dict:
        """A JSON-ready summary (widgets, REST, ``%scalable containers``)."""
        return {
            "tag": self.tag,
            "image": self.image,
            "cpus": self.cpus,
            "memory": slurm_memory(self.memory),
            "dirs": dict(self.dirs),
            "env": dict(self.env),
            "preload": self.preload,
        }


def container_preset(tag) -> dict:
    """``scalable.containers.<tag>`` from the config (keys matched case-insensitively, like
    tags), or {}."""
    tag = str(tag).lower()
    presets = config.get("containers", default=None) or {}
    return dict(next((v for k, v in presets.items() if str(k).lower() == tag), None) or {})


def image_name(tag) -> str:
    """The file name of a tag's image: the one place it is spelled.

    Examples
    --------
    >>> image_name("gcam")
    'gcam_container.sif'
    """
    return f"{tag}_container.sif"


def make_spec(
    tag,
    cpus=None,
    memory=None,
    dirs=None,
    path=None,
    env=None,
    preload_script=None,
    *,
    work_dir: str,
    runtime: ContainerRuntime | None,
    require_image: bool = True,
    prologue: bool = False,
    defaults: Mapping | None = None,
) -> ContainerSpec:
    """Validate ``add_container`` arguments and return a :class:`ContainerSpec`.

    Values left as None come from ``scalable.containers.<tag>`` in the config, then from
    ``defaults`` (the cluster's ``cpus=``/``memory=``), then from built-in defaults (1 cpu,
    1G). Every check names the tag and what to change.
    """
    tag = check_tag(tag)
    preset = container_preset(tag)
    defaults = dict(defaults or {})
    cpus = cpus if cpus is not None else preset.get("cpus", defaults.get("cpus") or 1)
    memory = memory if memory is not None else preset.get("memory", defaults.get("memory") or "1G")
    preload_script = preload_script if preload_script is not None else preset.get("preload_script")
    dirs = dirs if dirs is not None else preset.get("dirs", {})
    env = env if env is not None else preset.get("env", {})
    path = path if path is not None else preset.get("path")

    if isinstance(cpus, bool) or not isinstance(cpus, int) or cpus < 1:
        raise ContainerError(
            f"container {tag!r}: cpus={cpus!r} must be a positive whole number, e.g. cpus=4."
        )
    nbytes = parse_memory(memory, tag)
    if not isinstance(dirs, Mapping):
        raise ContainerError(
            f"container {tag!r}: dirs must map host paths to container paths, e.g. "
            f"dirs={{'/qfs/people/me/data': '/data'}}."
        )
    if not isinstance(env, Mapping):
        raise ContainerError(
            f"container {tag!r}: env must be a dict, e.g. env={{'OMP_NUM_THREADS': '4'}}."
        )
    binds = {}
    for src, dst in dirs.items():
        for side, value in (("host", src), ("container", dst)):
            _check_bind_path(tag, side, value, src, dst)
        src_abs = os.path.abspath(os.path.join(work_dir, os.path.expanduser(str(src))))
        if not os.path.exists(src_abs):
            raise ContainerError(
                f"container {tag!r}: bind source {src_abs!r} does not exist on this machine: "
                f"create it or fix the host side of dirs={{{str(src)!r}: {str(dst)!r}}}."
            )
        if not str(dst).startswith("/"):
            raise ContainerError(
                f"container {tag!r}: bind target {dst!r} must be an absolute path inside the "
                f"container, e.g. '/data'."
            )
        # the working directory may bring a comma or colon of its own
        _check_bind_path(tag, "host", src_abs, src, dst)
        binds[src_abs] = str(dst)
    for key, value in env.items():
        if not isinstance(key, str) or not _ENV_NAME.fullmatch(key):
            raise ContainerError(
                f"container {tag!r}: {key!r} is not a valid environment variable name: use "
                f"letters, digits and underscores, not starting with a digit, e.g. 'OMP_NUM_THREADS'."
            )
        if "\0" in str(value):
            raise ContainerError(
                f"container {tag!r}: env[{key!r}] contains a NUL byte, which no environment "
                f"variable can hold: remove it."
            )

    if path is not None and (
        not isinstance(path, (str, os.PathLike))
        or not isinstance(os.fspath(path), str)
        or "\0" in os.fspath(path)
    ):
        raise ContainerError(
            f"container {tag!r}: path={path!r} is not a file path: pass the image as a string, "
            f"e.g. path='/path/to/{tag}_container.sif'."
        )
    default_image = os.path.join(work_dir, config.get("container.directory"), image_name(tag))
    image = None
    if path is not None or require_image or os.path.exists(default_image):
        # without require_image (local runs) a tag uses its image if there is one
        image = os.path.abspath(
            os.path.join(work_dir, os.path.expanduser(os.fspath(path or default_image)))
        )
        if not os.path.exists(image):
            raise ContainerError(
                f"container {tag!r}: image {image!r} does not exist: build it "
                f"(scalable bootstrap) or pass path='/path/to/{tag}_container.sif'."
            )
    if image is not None and os.path.isdir(image):
        raise ContainerError(
            f"container {tag!r}: image {image!r} is not an image file: pass the .sif file, "
            f"e.g. path='/path/to/{tag}_container.sif'."
        )
    if image is not None and runtime is not None and not prologue and runtime.which() is None:
        # (with a job-script prologue, e.g. "module load apptainer", the nodes may well have it)
        warnings.warn(
            f"container {tag!r}: the runtime {runtime.executable!r} is not on this machine's "
            f"PATH; jobs will fail unless it exists on the compute nodes (add e.g. "
            f"job_script_prologue=['module load apptainer']).",
            stacklevel=3,
        )
    preload = None
    if preload_script is not None:
        # a worker without an image (local only) sees the host's paths
        preload = inside_path(
            tag, "preload_script", preload_script, work_dir, binds if image is not None else None
        )
    return ContainerSpec(
        tag, image, cpus, nbytes, binds, {str(k): str(v) for k, v in env.items()}, preload
    )


def inside_path(tag, what, value, work_dir, binds) -> str:
    """Where a file given to ``add_container`` is seen inside the container.

    A bare dotted name not ending in ``.py`` (``my_preload``) is a module in the image and is kept as it is. A path
    (relative to the work directory) must be a file on this machine; under the work
    directory (every container's home) or a bind source it is found through that mount,
    elsewhere it is bound at its own path (added to ``binds``). ``binds=None``: no
    container, the host path is returned.
    """
    text = os.path.expanduser(str(value))
    if (
        re.match(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$", text)
        and not text.endswith(".py")
        and not os.path.exists(os.path.join(work_dir, text))
    ):
        return text  # a module importable inside the image
    host = os.path.abspath(os.path.join(work_dir, text))
    if not os.path.isfile(host):
        raise ContainerError(
            f"container {tag!r}: {what} {host!r} is not a file on this machine: fix the path "
            f"(relative paths start at the work directory {work_dir!r}) or name a module "
            f"inside the image, e.g. {what}='my_preload'."
        )
    if binds is None or host.startswith(work_dir.rstrip("/") + "/"):
        return host
    for src, dst in binds.items():
        if host.startswith(src.rstrip("/") + "/"):
            return dst.rstrip("/") + host[len(src.rstrip("/")) :]
    binds[host] = host
    return host
