"""Host-side kernel launcher: an IPython kernel inside the scalable image, with a private relay.

JupyterLab runs on the login node; the kernelspec written by ``scalable kernel install`` starts
this launcher there, which

1. starts ``<runtime> exec ... <image> python -m ipykernel_launcher -f <connection file>`` in
   its own session, with the work directory, the notebook directory, the connection file's
   directory, the relay directory, the cluster registry and the user's binds bound in, and
   ``SCALABLE_RELAY``, ``SCALABLE_REGISTRY_DIR``, ``DASK_SCALABLE__WORK_DIRECTORY`` set and the
   relay's Slurm shims first on ``PATH``;
2. serves a relay (:class:`scalable.relay.server.RelayServer`) private to this kernel, so Slurm's
   commands, which live on the host, work from the kernel;
3. forwards SIGINT (Jupyter's interrupt), SIGTERM, SIGHUP, SIGQUIT, SIGUSR1/2 to the kernel,
   stops it if the Jupyter server that started the launcher dies, and when the kernel exits,
   however it exits, stops the relay, removes its directory and exits with the kernel's status.
   A watchdog process does the same cleanup, and kills the kernel, if the launcher itself is
   killed (``kill -9``, or Jupyter's kill of a stuck kernel).

The kernelspec runs this file by its path, not with ``-m``, so that nothing but the standard
library is imported before the kernel is spawned: scalable (and dask, and the relay) load while
the kernel boots, and the launcher adds little to the kernel's start-up time. Clients wait a
moment for a relay socket that is still being set up.

Examples
--------
The kernelspec's argv (see :mod:`scalable.kernel.install`)::

    /path/to/python /path/to/scalable/kernel/launcher.py \\
        --image /work/containers/scalable_container.sif --work-dir /work -f {connection_file}
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import signal
import subprocess
import sys
import tempfile

FORWARDED = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
#: what runs inside the image: put the shims first on PATH, then become ipykernel_launcher
BOOT = (
    "import os, runpy, sys; os.environ['PATH'] = {shims!r} + os.pathsep + os.environ.get('PATH', ''); "
    "sys.argv[0] = 'ipykernel_launcher'; runpy.run_module('ipykernel_launcher', run_name='__main__', alter_sys=True)"
)
#: the same for any other command (``scalable python``): shims first on PATH, then exec argv[1:]
BOOT_EXEC = (
    "import os, sys; os.environ['PATH'] = {shims!r} + os.pathsep + os.environ.get('PATH', ''); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


class LaunchError(Exception):
    """The kernel cannot start; the message is the one line the Jupyter server log shows."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scalable-kernel-launcher",
        description="Start an IPython kernel inside a container image, "
        "with a private Slurm command relay.",
    )
    p.add_argument("-f", "--connection-file", required=True)
    p.add_argument("--image", required=True, help="image the kernel runs in")
    p.add_argument("--runtime", default="apptainer", help="container runtime on the host PATH")
    p.add_argument(
        "--exec-arg", action="append", default=[], help="extra '<runtime> exec' argument"
    )
    p.add_argument("--work-dir", help="work directory (bound at the same path; cluster default)")
    p.add_argument("--bind", action="append", default=[], metavar="HOST[:CONTAINER]")
    p.add_argument("--env", action="append", default=[], metavar="K=V")
    p.add_argument("--registry-dir", help="cluster registry the JupyterLab sidebar reads")
    p.add_argument("--python", default="python", help="the kernel's Python inside the image")
    p.add_argument("--tag", help="container tag this kernel belongs to (informational)")
    return p


def registry_dir(explicit: str | None) -> str:
    # Same rule as scalable.jupyter.registry.registry_dir() and the server extension's default,
    # evaluated here on the host in the Jupyter server's environment, so both sides agree.
    if explicit or os.environ.get("SCALABLE_REGISTRY_DIR"):
        return os.path.abspath(os.path.expanduser(explicit or os.environ["SCALABLE_REGISTRY_DIR"]))
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return os.path.join(data, "scalable", "registry")


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _trust():
    """:mod:`scalable.trust` (stdlib only), loaded from its file when this launcher runs by its
    path: importing the package would load Dask before the kernel starts."""
    if __package__:
        from .. import trust

        return trust
    import importlib.util

    name = "scalable.trust"
    if name not in sys.modules:
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "trust.py")
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def plan(args, relay_dir: str, command: list[str] | None = None) -> tuple[list[str], dict]:
    """Return the runtime argv for the kernel (or, given ``command``, for that argv run inside
    the image with the relay's shims on ``PATH``) and the facts the launcher reports."""
    runtime = shutil.which(args.runtime)
    if runtime is None:
        raise LaunchError(
            f"the container runtime {args.runtime!r} is not on PATH; load it (e.g. "
            f"module load apptainer) before starting JupyterLab, or reinstall the "
            f"kernel with scalable kernel install --runtime NAME"
        )
    image = os.path.abspath(args.image)
    if not os.path.isfile(image):
        raise LaunchError(
            f"image {image} does not exist; copy it there (scalable bootstrap) or "
            f"reinstall the kernel with scalable kernel install --image PATH"
        )
    conn = os.path.abspath(args.connection_file) if command is None else None
    cwd = os.getcwd()
    work = os.path.abspath(args.work_dir) if args.work_dir else cwd
    if not os.path.isdir(work):
        raise LaunchError(
            f"work directory {work} does not exist; create it or reinstall the kernel "
            f"with scalable kernel install --work-dir DIR"
        )
    registry = registry_dir(args.registry_dir)
    trust = _trust()
    try:  # 0700 whatever the umask: the server trusts entries only in a directory others cannot write
        trust.make_private_dir(registry)
    except trust.Untrusted as e:
        _warn(f"the Scalable sidebar will not list this kernel's clusters: {e}")
    binds: dict[str, str] = {}

    def same_path(path):
        if path != "/" and not any(src == dst and _under(path, src) for src, dst in binds.items()):
            binds[path] = path

    for path in (work, cwd, os.path.dirname(conn) if conn else None, registry):
        if path:
            same_path(path)
    binds[relay_dir] = relay_dir
    for item in args.bind:
        src, _, dst = item.partition(":")
        src = os.path.abspath(os.path.expanduser(src))
        if not os.path.exists(src):
            raise LaunchError(
                f"bind source {src} does not exist; create it or reinstall the kernel "
                f"without --bind {item}"
            )
        binds[src] = dst or src
    env = {
        "SCALABLE_RELAY": os.path.join(relay_dir, "relay.sock"),
        "SCALABLE_REGISTRY_DIR": registry,
        "DASK_SCALABLE__WORK_DIRECTORY": work,
    }
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep:
            raise LaunchError(
                f"--env {item!r} is not K=V; reinstall the kernel with e.g. --env OMP_NUM_THREADS=4"
            )
        env[key] = value
    shims = os.path.join(relay_dir, "bin")
    # Spelled as scalable.runtimes.ContainerRuntime.exec_argv spells it (a test holds them
    # equal); that module is not imported here because it loads scalable, and dask, first.
    # variables go as <PREFIX>K=V, never --env K=V: the runtime splits --env at commas
    prefix = (
        "SINGULARITYENV_" if os.path.basename(args.runtime) == "singularity" else "APPTAINERENV_"
    )
    from_rt = [
        "env",
        *(f"{prefix}{key}={value}" for key, value in env.items()),
        runtime,
        "exec",
        *args.exec_arg,
    ]
    for src, dst in binds.items():
        from_rt += ["--bind", f"{src}:{dst}"]
    if command is None:
        inner = [args.python, "-c", BOOT.format(shims=shims), "-f", conn]
    else:
        inner = [args.python, "-c", BOOT_EXEC.format(shims=shims), *command]
    argv = from_rt + ["--pwd", cwd, image, *inner]
    return argv, {"binds": binds, "env": env, "image": image}


def _watchdog(relay_dir: str) -> int:
    """Fork a process that cleans up if this launcher dies without doing so; return its pipe."""
    read_fd, write_fd = os.pipe()
    if os.fork() == 0:  # the watchdog: in its own session, so a kill of our group spares it
        try:
            os.close(write_fd)
            os.setsid()
            _set_process_name(b"scalable-watch")
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            data = b""
            while chunk := os.read(read_fd, 256):
                data += chunk
            words = data.decode().split()
            if "clean" not in words:
                if "pid" in words:
                    _stop_group(int(words[words.index("pid") + 1]))
                shutil.rmtree(relay_dir, ignore_errors=True)
        finally:
            os._exit(0)
    os.close(read_fd)
    return write_fd


def _set_process_name(name: bytes) -> None:
    """Name this process (``ps -o comm``) so it is told apart from the launcher it forked from."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, ctypes.c_char_p(name), 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def _stop_group(pid: int, grace: float = 2.0) -> None:
    import time

    try:
        os.kill(pid, signal.SIGTERM)  # the runtime forwards it to the kernel
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def launch(args, command: list[str] | None = None, foreground: bool = False) -> int:
    """Run the kernel (or ``command``, see :func:`plan`) in the image beside a private relay;
    return its exit status.

    ``foreground`` (``scalable python``): the child gets its own process group and, when this
    process owns the terminal, the terminal, so Ctrl-C and Ctrl-\\ reach the child once, from
    the terminal, and stdin reads do not stop it; signals sent to this process are forwarded as
    for the kernel. The kernel instead runs in its own session, away from any terminal.
    """
    base = os.environ.get("XDG_RUNTIME_DIR")
    base = (
        base if base and os.path.isdir(base) and os.access(base, os.W_OK) else tempfile.gettempdir()
    )
    relay_dir = tempfile.mkdtemp(prefix="scalable-kernel-", dir=base)  # 0700
    watchdog = _watchdog(relay_dir)
    tty = None
    try:
        argv, _facts = plan(args, relay_dir, command)
        if foreground:
            tty = _terminal()
            # The child takes the terminal itself, before it execs, and the launcher never
            # after: handed over after Popen, the terminal could reach the runtime after it had
            # checked for it (and ran its command outside the foreground group), or be taken
            # back from the group the runtime had given it to (so Ctrl-C missed the command).
            take = None if tty is None else functools.partial(_give_terminal, tty, 0)
            kernel = subprocess.Popen(argv, process_group=0, preexec_fn=take)
        else:
            kernel = subprocess.Popen(argv, start_new_session=True)
    except BaseException:
        shutil.rmtree(relay_dir, ignore_errors=True)
        os.write(watchdog, b"clean\n")
        os.close(watchdog)
        raise
    os.write(watchdog, f"pid {kernel.pid}\n".encode())
    for sig in FORWARDED:  # until the event loop takes over the signals
        signal.signal(sig, lambda signum, _frame: _forward(kernel, signum))
    try:
        # From here on the kernel boots in parallel: importing scalable costs it nothing.
        import asyncio

        try:
            from scalable.relay.shim import write_shims

            python = args.python if "/" in args.python else f"/usr/bin/env {args.python}"
            write_shims(os.path.join(relay_dir, "bin"), python=python)
        except Exception as e:  # the kernel is still useful without Slurm
            _warn(f"the Slurm command shims could not be written ({e})")

        return asyncio.run(_serve_while(kernel, os.path.join(relay_dir, "relay.sock")))
    finally:
        if kernel.poll() is None:
            _stop_group(kernel.pid)
        if tty is not None:
            _give_terminal(tty, os.getpgrp())
        shutil.rmtree(relay_dir, ignore_errors=True)
        os.write(watchdog, b"clean\n")
        os.close(watchdog)


async def _serve_while(kernel: subprocess.Popen, socket_path: str) -> int:
    """Serve the relay until the kernel exits; forward signals to it meanwhile."""
    import asyncio

    loop = asyncio.get_running_loop()
    for sig in FORWARDED:
        loop.add_signal_handler(sig, _forward, kernel, sig)
    exited = loop.run_in_executor(None, kernel.wait)
    watcher = asyncio.ensure_future(_stop_when_orphaned(kernel))
    try:
        from scalable.relay.server import RelayServer  # imports dask while the kernel boots

        relay = RelayServer(socket_path)
        await relay.start()
    except Exception as e:  # the kernel is still useful without Slurm
        _warn(f"the Slurm relay did not start ({e})")
        relay = None
    try:
        code = await exited
    finally:
        watcher.cancel()
        if relay is not None:
            await relay.close()
    return code if code >= 0 else 128 - code


async def _stop_when_orphaned(kernel: subprocess.Popen, interval: float = 1.0) -> None:
    """Stop the kernel if the Jupyter server that started us dies (a plain ipykernel, the
    server's own child, notices that itself; ours sits below the runtime and cannot)."""
    import asyncio

    parent = os.getppid()
    if parent == 1:
        return
    while os.getppid() == parent:
        await asyncio.sleep(interval)
    _forward(kernel, signal.SIGTERM)


def _terminal() -> int | None:
    """stdin's terminal if this process is in its foreground (never steal it from a shell that
    ran us in the background), else None."""
    try:
        if os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp():
            return 0
    except OSError:
        pass
    return None


def _give_terminal(fd: int, pgid: int) -> None:
    """Make ``pgid`` (0: this process's own group) the terminal's foreground group, as a
    shell does for a job."""
    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # we may be in the background by now
    pgid = pgid or os.getpgrp()
    try:
        os.tcsetpgrp(fd, pgid)
        if pgid != os.getpgrp():
            os.killpg(pgid, signal.SIGCONT)  # in case it read the terminal before it owned it
    except OSError:
        pass
    finally:
        signal.signal(signal.SIGTTOU, old)


def _warn(problem: str) -> None:
    print(
        f"scalable kernel: {problem}; Slurm commands will fail in this kernel",
        file=sys.stderr,
        flush=True,
    )


def _forward(kernel: subprocess.Popen, sig: int) -> None:
    try:
        kernel.send_signal(sig)
    except ProcessLookupError:
        pass


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return launch(args)
    except LaunchError as e:
        print(f"scalable kernel: {e}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    # Run as a file: our own folder (scalable/kernel) must not shadow top-level modules.
    if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
        del sys.path[0]
    sys.exit(main())
