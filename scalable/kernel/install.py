"""Install, list and remove Scalable kernelspecs.

A Scalable kernelspec runs :mod:`scalable.kernel.launcher` with the host's Python; the launcher
starts the kernel inside an image. The spec is filled from the template in ``kernels/scalable``
(``kernel.json`` and logos) and installed with Jupyter's own
:meth:`~jupyter_client.kernelspec.KernelSpecManager.install_kernel_spec`.

Examples
--------
>>> install(image="/work/containers/scalable_container.sif", prefix="/work/.scalable/jupyter")  # doctest: +SKIP
'/work/.scalable/jupyter/share/jupyter/kernels/scalable'
>>> install(tag="gcam", work_dir="/work", user=True)        # "Scalable (gcam)"  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

from .. import config
from ..containers import image_name

#: the launcher, run by its path so that the kernel spawns before scalable is imported
LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "launcher.py")
_NAME = re.compile(r"^[a-z0-9._-]+$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class KernelInstallError(ValueError):
    """A kernel install request that cannot work, with a sentence saying what to change."""


def template_dir() -> Path:
    """The kernelspec template: shipped as ``scalable/kernels`` in the wheel, or the repository's
    ``kernels/`` in an editable install."""
    package = Path(__file__).resolve().parent.parent
    for candidate in (package / "kernels" / "scalable", package.parent / "kernels" / "scalable"):
        if (candidate / "kernel.json").is_file():
            return candidate
    raise FileNotFoundError(
        "the Scalable kernelspec template is missing from this installation; reinstall scalable"
    )


def _manager(prefix: str | None = None):
    from jupyter_client.kernelspec import KernelSpecManager

    ksm = KernelSpecManager()
    if prefix:
        ksm.kernel_dirs = [os.path.join(prefix, "share", "jupyter", "kernels"), *ksm.kernel_dirs]
    return ksm


def default_work_dir(image: str | None) -> str:
    """``scalable.work-directory``, else the folder holding ``containers/<image>``, else cwd."""
    configured = config.get("work-directory")
    if configured:
        return os.path.abspath(os.path.expanduser(configured))
    if image:
        folder = os.path.dirname(os.path.abspath(image))
        if os.path.basename(folder) == config.get("container.directory"):
            return os.path.dirname(folder)
    return os.getcwd()


def kernel_spec(
    *,
    image: str | None = None,
    tag: str | None = None,
    binds=(),
    env=(),
    work_dir: str | None = None,
    runtime: str | None = None,
    registry_dir: str | None = None,
    python: str | None = None,
    display_name: str | None = None,
) -> dict:
    """Return the ``kernel.json`` dict of a Scalable kernel (nothing is written).

    Examples
    --------
    >>> spec = kernel_spec(image="/w/containers/scalable_container.sif")
    >>> spec["argv"][1].endswith("scalable/kernel/launcher.py"), spec["argv"][-2:]
    (True, ['-f', '{connection_file}'])
    >>> spec["display_name"]
    'Scalable'
    """
    from ..containers import check_tag, make_spec

    work = os.path.abspath(os.path.expanduser(work_dir)) if work_dir else default_work_dir(image)
    binds, env = list(binds), list(env)
    if tag is not None:
        check_tag(tag)
        spec = make_spec(tag, path=image, work_dir=work, runtime=None, require_image=False)
        image = image or spec.image
        binds += [f"{src}:{dst}" for src, dst in spec.dirs.items()]
        env += [f"{k}={v}" for k, v in spec.env.items()]
    if not image:
        image = os.path.join(work, config.get("container.directory"), image_name(tag or "scalable"))
    image = os.path.abspath(os.path.expanduser(image))
    if not os.path.isfile(image):
        warnings.warn(
            f"image {image} does not exist yet; the kernel will not start until it does",
            stacklevel=2,
        )
    for item in binds:
        src = os.path.expanduser(item.partition(":")[0])
        if not os.path.exists(src):
            raise KernelInstallError(
                f"bind source {src!r} does not exist on this machine; create it or fix --bind {item}"
            )
    for item in env:
        key, sep, _ = item.partition("=")
        if not sep or not _ENV_KEY.match(key):
            raise KernelInstallError(
                f"--env {item!r} must look like NAME=value, e.g. --env OMP_NUM_THREADS=4"
            )

    options = [
        "--image",
        image,
        "--runtime",
        config.get("container.runtime", runtime),
        "--work-dir",
        work,
        "--python",
        config.get("container.python", python),
    ]
    for arg in config.get("container.exec-args") or []:
        options.append(f"--exec-arg={arg}")  # "=" keeps values like "--nv" from reading as options
    for item in binds:
        options += ["--bind", item]
    for item in env:
        options += ["--env", item]
    if registry_dir:
        options += ["--registry-dir", os.path.abspath(os.path.expanduser(registry_dir))]
    if tag:
        options += ["--tag", tag]

    with open(template_dir() / "kernel.json") as f:
        spec = json.load(f)
    argv = []
    for item in spec["argv"]:
        argv += {
            "{python}": [sys.executable],
            "{launcher}": [LAUNCHER],
            "{launcher_options}": options,
        }.get(item, [item])
    spec["argv"] = argv
    spec["display_name"] = display_name or (
        f"{spec['display_name']} ({tag})" if tag else spec["display_name"]
    )
    spec["metadata"]["scalable"] = {"image": image, "tag": tag, "work_dir": work}
    return spec


def install(
    name: str | None = None,
    *,
    user: bool = False,
    prefix: str | None = None,
    tag: str | None = None,
    **spec_options,
) -> str:
    """Install a Scalable kernelspec and return the directory it went to.

    Parameters
    ----------
    name : str, optional
        Kernel name (``scalable``, or ``scalable-<tag>`` for a tag's kernel).
    user : bool
        Install for this user (``~/.local/share/jupyter/kernels``).
    prefix : str, optional
        Install under ``<prefix>/share/jupyter/kernels`` (``sys.prefix`` for ``--sys-prefix``).
    tag : str, optional
        Run in that tag's image (from config or ``<work_dir>/containers/<tag>_container.sif``),
        with its binds and environment.
    **spec_options
        ``image``, ``binds``, ``env``, ``work_dir``, ``runtime``, ``registry_dir``, ``python``,
        ``display_name``: see :func:`kernel_spec`.
    """
    name = (name or (f"scalable-{tag}" if tag else "scalable")).lower()
    if not _NAME.match(name):
        raise KernelInstallError(
            f"kernel name {name!r} may hold only letters, digits, '.', '_' and '-', e.g. --name scalable-gcam"
        )
    spec = kernel_spec(tag=tag, **spec_options)
    with tempfile.TemporaryDirectory() as tmp:
        for logo in template_dir().glob("logo-*"):
            shutil.copy(logo, tmp)
        with open(os.path.join(tmp, "kernel.json"), "w") as f:
            json.dump(spec, f, indent=1)
        return _manager(prefix).install_kernel_spec(tmp, name, user=user, prefix=prefix)


def list_kernels(prefix: str | None = None) -> list[dict]:
    """The Scalable kernelspecs Jupyter can see: name, display name, image, tag, directory."""
    found = []
    for name, info in sorted(_manager(prefix).get_all_specs().items()):
        spec = info["spec"]
        if any(
            str(a).endswith(os.path.join("scalable", "kernel", "launcher.py"))
            for a in spec.get("argv", [])
        ):
            meta = spec.get("metadata", {}).get("scalable", {})
            found.append(
                {
                    "name": name,
                    "display_name": spec.get("display_name"),
                    "image": meta.get("image"),
                    "tag": meta.get("tag"),
                    "resource_dir": info["resource_dir"],
                }
            )
    return found


def remove(name: str, prefix: str | None = None) -> str:
    """Remove the Scalable kernelspec ``name``; return the directory removed."""
    kernels = {k["name"]: k for k in list_kernels(prefix)}
    if name not in kernels:
        known = ", ".join(kernels) or "none"
        raise KernelInstallError(
            f"no Scalable kernel named {name!r} (installed: {known}); see scalable kernel list"
        )
    return _manager(prefix).remove_kernel_spec(name)
