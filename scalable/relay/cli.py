"""``scalable relay``: serve the host command relay, write shims, or call it."""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "relay",
        help="run Slurm commands for the scalable container (host side)",
        description="Serve allowlisted Slurm commands on a private Unix socket for code running "
        "inside the scalable image. With no subcommand, serve.",
    )
    _serve_options(p, None)
    p.set_defaults(func=_serve)
    sub = p.add_subparsers(dest="relay_command", metavar="SUBCOMMAND")
    s = sub.add_parser("serve", help="serve the relay until SIGTERM/SIGINT (the default)")
    _serve_options(s, argparse.SUPPRESS)  # keep values given before "serve"
    s.set_defaults(func=_serve)
    sh = sub.add_parser("shims", help="write sbatch/squeue/... shims into a directory")
    sh.add_argument("directory", help="directory to put first on the container's PATH")
    sh.add_argument(
        "--python",
        default="/usr/bin/env python3",
        help="interpreter line for the shims, as seen inside the image",
    )
    sh.set_defaults(func=_shims)
    r = sub.add_parser(
        "run", help="run one command through the relay: scalable relay run -- squeue --me"
    )
    r.add_argument("--socket", help="relay socket (default: $SCALABLE_RELAY)")
    r.add_argument("argv", nargs=argparse.REMAINDER)
    r.set_defaults(func=_run)


def _serve_options(p, default) -> None:
    p.add_argument(
        "--socket",
        default=default,
        help="socket path, in a directory only you can write "
        "(default: $SCALABLE_RELAY, else a fresh private directory under $XDG_RUNTIME_DIR or /tmp)",
    )
    p.add_argument(
        "--allow",
        action="append",
        metavar="NAME",
        default=default,
        help="allowlisted program (repeat); default scalable.relay.allowlist",
    )
    p.add_argument(
        "--timeout", type=float, default=default, help="longest a command may run, seconds"
    )
    p.add_argument(
        "--log-file", default=default, help="request log (default relay.log beside the socket)"
    )


def _serve(args) -> int:
    import asyncio

    from .server import RelayError, default_socket_path, serve

    path = args.socket or default_socket_path()

    def ready(server):
        print(f"scalable relay serving {server.socket_path} (log: {server.log_file})", flush=True)
        print(f"inside the image: export SCALABLE_RELAY={server.socket_path}", flush=True)

    try:
        asyncio.run(
            serve(
                path,
                ready=ready,
                allowlist=args.allow,
                timeout=args.timeout,
                log_file=args.log_file,
            )
        )
    except RelayError as e:
        print(f"scalable relay: {e}", file=sys.stderr)
        return 1
    return 0


def _shims(args) -> int:
    from .shim import write_shims

    names = write_shims(args.directory, python=args.python)
    print(f"wrote {', '.join(names)} into {args.directory}; put it first on the container's PATH")
    return 0


def _run(args) -> int:
    import os

    from .shim import forward

    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        print(
            "scalable relay run: give a command, e.g. scalable relay run -- squeue --me",
            file=sys.stderr,
        )
        return 2
    if args.socket:
        os.environ["SCALABLE_RELAY"] = args.socket
    return forward(argv)
