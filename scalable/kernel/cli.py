"""``scalable kernel install|list|remove``: Jupyter kernels that run inside the scalable image."""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "kernel",
        help="install Jupyter kernels that run inside an image",
        description="Manage Scalable kernelspecs: IPython inside a container "
        "image, with Slurm reachable through a private relay.",
    )
    p.set_defaults(func=lambda args: p.print_help() or 2)
    sub = p.add_subparsers(dest="kernel_command", metavar="SUBCOMMAND")

    i = sub.add_parser("install", help="install a Scalable kernelspec")
    i.add_argument("--name", help="kernel name (default: scalable, or scalable-<tag>)")
    i.add_argument(
        "--display-name", help="name shown in JupyterLab (default: Scalable, or Scalable (<tag>))"
    )
    i.add_argument(
        "--image",
        help="image the kernel runs in (default: <work dir>/containers/"
        "scalable_container.sif, or the tag's image)",
    )
    i.add_argument("--tag", help="run in this container tag's image, with its binds and env")
    i.add_argument(
        "--bind",
        action="append",
        default=[],
        metavar="HOST:CONTAINER",
        help="extra bind mount (repeat)",
    )
    i.add_argument(
        "--env", action="append", default=[], metavar="K=V", help="environment variable (repeat)"
    )
    i.add_argument(
        "--work-dir",
        help="work directory bound into the kernel and used by clusters "
        "(default: scalable.work-directory, the folder holding containers/, or here)",
    )
    i.add_argument("--runtime", help="container runtime (default: scalable.container.runtime)")
    i.add_argument(
        "--registry-dir",
        help="cluster registry the JupyterLab sidebar reads (default: "
        "$SCALABLE_REGISTRY_DIR or ~/.local/share/scalable/registry of the Jupyter server)",
    )
    i.add_argument(
        "--python", help="the kernel's Python inside the image (default: scalable.container.python)"
    )
    where = i.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="install for this user only")
    where.add_argument("--prefix", help="install under PREFIX/share/jupyter/kernels")
    where.add_argument(
        "--sys-prefix", action="store_true", help="install into this Python's environment"
    )
    i.set_defaults(func=_install)

    ls = sub.add_parser("list", help="list the Scalable kernelspecs Jupyter can see")
    ls.add_argument("--prefix", help="also look under PREFIX/share/jupyter/kernels")
    ls.set_defaults(func=_list)

    rm = sub.add_parser("remove", help="remove a Scalable kernelspec")
    rm.add_argument("name")
    rm.add_argument("--prefix", help="also look under PREFIX/share/jupyter/kernels")
    rm.set_defaults(func=_remove)


def _install(args) -> int:
    import warnings

    from ..containers import ContainerError
    from .install import KernelInstallError, install

    prefix = sys.prefix if args.sys_prefix else args.prefix
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            path = install(
                args.name,
                user=args.user,
                prefix=prefix,
                tag=args.tag,
                image=args.image,
                binds=args.bind,
                env=args.env,
                work_dir=args.work_dir,
                runtime=args.runtime,
                registry_dir=args.registry_dir,
                python=args.python,
                display_name=args.display_name,
            )
        except (KernelInstallError, ContainerError) as e:
            print(f"scalable kernel install: {e}", file=sys.stderr)
            return 1
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(f"installed kernelspec in {path}")
    return 0


def _list(args) -> int:
    from .install import list_kernels

    kernels = list_kernels(args.prefix)
    if not kernels:
        print("no Scalable kernels installed; add one with: scalable kernel install --user")
    for k in kernels:
        print(f"{k['name']:<20} {k['display_name']:<24} {k['image']}  ({k['resource_dir']})")
    return 0


def _remove(args) -> int:
    from .install import KernelInstallError, remove

    try:
        print(f"removed {remove(args.name, args.prefix)}")
    except KernelInstallError as e:
        print(f"scalable kernel remove: {e}", file=sys.stderr)
        return 1
    return 0
