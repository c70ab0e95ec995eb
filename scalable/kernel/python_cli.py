"""``scalable python``: Python inside the scalable image, with Slurm reachable as from a notebook.

The original scalable aliased ``python3`` on the HPC to run Python inside
``scalable_container.sif``; this is that command, built from the kernel launcher's pieces
(:func:`scalable.kernel.launcher.plan` and :func:`~scalable.kernel.launcher.launch`): the same
binds (the work directory, the current directory, the cluster registry), the same environment
(``SCALABLE_RELAY``, ``DASK_SCALABLE__WORK_DIRECTORY``), the same private relay and Slurm shims, so
``SlurmCluster()`` in a batch script behaves exactly as in a Scalable notebook. Python runs in the
current directory, as ``python3`` would; clusters use the work directory.

Everything after ``scalable python`` goes to Python (``-c``, ``-m``, ``-i``, a script and its
arguments), except leading options of scalable's own, spelled ``--image PATH`` or ``--image=PATH``
(``--work-dir``, ``--bind``, ``--env``, ``--runtime``, ``--write-wrapper``; ``--help``). Exit status,
stdin and Ctrl-C pass through.

Examples
--------
.. code-block:: console

    $ scalable python                       # an interactive session in the image
    $ scalable python workflow.py 2030      # a batch workflow; its exit status is ours
    $ scalable python --work-dir /work --write-wrapper /work/python3   # ./python3 does the same
"""

from __future__ import annotations

import argparse
import os
import shlex
import stat
import sys

HELP = __doc__.split("\n\n")[0]
#: scalable's own leading options, and whether each repeats
OWN = {
    "--image": False,
    "--work-dir": False,
    "--runtime": False,
    "--bind": True,
    "--env": True,
    "--write-wrapper": False,
    "--module-load": False,
}


class UsageError(ValueError):
    """A mistake on the command line, said in one sentence."""


def register(subparsers) -> None:
    # prefix_chars="+": argparse leaves every "-x" alone, so Python gets its own options.
    p = subparsers.add_parser(
        "python",
        help="run Python inside the scalable image (python3 on the HPC)",
        description=HELP,
        prefix_chars="+",
        add_help=False,
    )
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p.set_defaults(func=main)


def split(argv: list[str]) -> tuple[dict, list[str]]:
    """Split ``argv`` into scalable's leading options and Python's arguments.

    Examples
    --------
    >>> split(["--image=/w/s.sif", "--bind", "/a:/b", "-c", "print(1)"])
    ({'bind': ['/a:/b'], 'env': [], 'image': '/w/s.sif'}, ['-c', 'print(1)'])
    >>> split(["script.py", "--image", "x"])[1]
    ['script.py', '--image', 'x']
    """
    opts: dict = {"bind": [], "env": []}
    i = 0
    while i < len(argv):
        name, eq, value = argv[i].partition("=")
        if argv[i] == "--":
            i += 1
            break
        if name in ("--help",):
            opts["help"] = True
            i += 1
            continue
        if name not in OWN:
            break
        if not eq:
            if i + 1 >= len(argv):
                raise UsageError(f"{name} needs a value, e.g. {name}=VALUE")
            value = argv[i + 1]
            i += 1
        key = name[2:].replace("-", "_")
        if OWN[name]:
            opts[key].append(value)
        else:
            opts[key] = value
        i += 1
    return opts, argv[i:]


def launcher_args(opts: dict) -> argparse.Namespace:
    """The kernel launcher's arguments for these options, defaults from ``dask.config``."""
    from .. import config
    from ..containers import image_name
    from .install import default_work_dir

    work = os.path.abspath(os.path.expanduser(opts["work_dir"])) if opts.get("work_dir") else None
    work = work or default_work_dir(opts.get("image"))
    image = opts.get("image") or os.path.join(
        work, config.get("container.directory"), image_name("scalable")
    )
    return argparse.Namespace(
        connection_file=None,
        image=os.path.abspath(os.path.expanduser(image)),
        runtime=config.get("container.runtime", opts.get("runtime")),
        exec_arg=list(config.get("container.exec-args") or []),
        work_dir=work,
        bind=opts["bind"],
        env=opts["env"],
        registry_dir=None,
        python=config.get("container.python"),
        tag=None,
    )


def wrapper_text(args: argparse.Namespace, module_load: str = "") -> str:
    """A ``python3``-style script that runs ``scalable python`` with this Python and these options."""
    argv = [
        sys.executable,
        "-m",
        "scalable.cli",
        "python",
        f"--work-dir={args.work_dir}",
        f"--image={args.image}",
        f"--runtime={args.runtime}",
    ]
    argv += [f"--bind={b}" for b in args.bind] + [f"--env={e}" for e in args.env]
    lines = [
        "#!/bin/sh",
        "# Python inside the scalable image, with Slurm through the relay (scalable python).",
        "# Written by scalable bootstrap --python3-wrapper / scalable python --write-wrapper.",
    ]
    if module_load:
        lines.append(module_load)
    lines.append(f'exec {shlex.join(argv)} -- "$@"')
    return "\n".join(lines) + "\n"


def write_wrapper(path: str, text: str) -> str:
    """Write ``text`` to ``path`` (0755), replacing only a regular file of ours, never a link."""
    path = os.path.abspath(os.path.expanduser(path))
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None and (not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid()):
        raise UsageError(
            f"{path} exists and is not a regular file of yours; remove it or choose "
            f"another --write-wrapper path"
        )
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def check(ns: argparse.Namespace) -> None:
    """The launcher's checks, said for this command rather than for a kernelspec."""
    import shutil

    if not os.path.isfile(ns.image):
        raise UsageError(
            f"image {ns.image} does not exist; copy it there (scalable bootstrap) or "
            f"give scalable python --image PATH"
        )
    if shutil.which(ns.runtime) is None:
        raise UsageError(
            f"the container runtime {ns.runtime!r} is not on PATH; load it (e.g. module "
            f"load apptainer) or give scalable python --runtime NAME"
        )
    if not os.path.isdir(ns.work_dir):
        raise UsageError(
            f"work directory {ns.work_dir} does not exist; create it or give "
            f"scalable python --work-dir DIR"
        )


def main(args) -> int:
    from .launcher import LaunchError, launch

    try:
        opts, python_args = split(args.argv)
        if opts.get("help"):
            print(
                f"usage: scalable python [--image PATH] [--work-dir DIR] [--bind HOST[:CONTAINER]]... "
                f"[--env K=V]... [--runtime NAME] [--write-wrapper PATH [--module-load LINE]] "
                f"[PYTHON ARGS...]\n\n{__doc__.split('Examples')[0].strip()}"
            )
            return 0
        ns = launcher_args(opts)
        if opts.get("write_wrapper"):
            path = write_wrapper(
                opts["write_wrapper"], wrapper_text(ns, opts.get("module_load", ""))
            )
            print(f"wrote {path}: run it as python3 to run Python in {ns.image}")
            return 0
        check(ns)
        return launch(ns, command=[ns.python, *python_args], foreground=True)
    except (UsageError, LaunchError) as e:
        print(f"scalable python: {e}", file=sys.stderr, flush=True)
        return 1
