"""``scalable bootstrap``: from this machine to JupyterLab on the HPC login host in one command.

Asks for the host, user, work directory, identity file and container targets once (saved in
``~/.config/scalable/bootstrap.json``; flags override and are saved too), then runs the steps of
:mod:`scalable.bootstrap.steps`, resuming where the last run stopped, and keeps the SSH
port-forward to JupyterLab open until Ctrl-C.
"""

from __future__ import annotations

import os
import sys
import time

from .dockerfile import DockerfileError, model_targets, targets as dockerfile_targets
from .settings import ASKED, PROMPTS, Settings, State, config_dir, load_settings, save_settings
from .ssh import SSHError
from .steps import STEPS, Bootstrap, BootstrapError

#: flags that are remembered: each sets the settings field of the same name
_SAVED = (
    "host",
    "user",
    "work_dir",
    "identity_file",
    "targets",
    "ssh_config",
    "dockerfile",
    "local_dir",
    "converter",
    "docker",
    "apptainer",
    "module_load",
    "remote_python",
    "remote_pip_spec",
    "remote_base_python",
    "system_site_packages",
    "jupyter_port",
    "local_port",
    "python3_wrapper",
)


def register(subparsers) -> None:
    """Add ``scalable bootstrap`` to the ``scalable`` command."""
    p = subparsers.add_parser(
        "bootstrap",
        help="build images, set up the HPC work directory, open JupyterLab there",
        description="From this machine to JupyterLab on the HPC login host in one command: build "
        "and convert the container images, copy them, set the work directory up, start "
        "JupyterLab there and forward a local port to it. Re-runs resume.",
        epilog="steps: " + ", ".join(STEPS) + ". Settings are saved in " + str(config_dir()),
    )
    g = p.add_argument_group("where (asked once, then remembered)")
    g.add_argument("--host", help="HPC login host or ~/.ssh/config alias")
    g.add_argument("--user", help="user name there (default: from ~/.ssh/config)")
    g.add_argument("--work-dir", help="absolute work directory on the host")
    g.add_argument("--identity-file", help="SSH private key (default: ssh's own choice)")
    g.add_argument("--targets", type=_csv, help="model targets to build, e.g. gcam,stitches")
    o = p.add_argument_group("how (remembered too)")
    o.add_argument("--ssh-config", help="ssh configuration file (default: ~/.ssh/config)")
    o.add_argument(
        "--dockerfile", help="Dockerfile whose targets are built (default: ./Dockerfile)"
    )
    o.add_argument(
        "--local-dir",
        help="where SIF images are written here (default: ~/.cache/scalable/containers)",
    )
    o.add_argument(
        "--converter",
        choices=["docker", "apptainer"],
        help="convert with the Dockerfile's apptainer target (docker) or a local apptainer",
    )
    o.add_argument("--docker", help="docker program (e.g. podman)")
    o.add_argument("--apptainer", help="local apptainer program, for --converter apptainer")
    o.add_argument(
        "--module-load",
        help="shell line that makes apptainer available on the host, e.g. 'module load apptainer'",
    )
    o.add_argument(
        "--remote-python",
        help="use this existing interpreter on the host instead of creating <work_dir>/.venv",
    )
    o.add_argument(
        "--remote-pip-spec",
        help="what the host venv installs (default: scalable[jupyter]==VERSION)",
    )
    o.add_argument(
        "--remote-base-python",
        help="interpreter on the host the venv is made from (default: python3)",
    )
    o.add_argument(
        "--system-site-packages",
        action="store_true",
        default=None,
        help="let the venv see the base interpreter's packages (e.g. a site's JupyterLab)",
    )
    o.add_argument(
        "--python3-wrapper",
        action="store_true",
        default=None,
        help="also install <work_dir>/python3 on the host: Python in the scalable image "
        "with Slurm through the relay (scalable python), as the original's python3",
    )
    o.add_argument(
        "--jupyter-port", type=int, help="JupyterLab's port on the host (default: a free one)"
    )
    o.add_argument("--local-port", type=int, help="port of the forward here (default: a free one)")
    r = p.add_argument_group("what to do")
    r.add_argument("--connect", action="store_true", help="only (re)start JupyterLab and reconnect")
    r.add_argument("--until", choices=STEPS, help="stop after this step")
    r.add_argument(
        "--redo", type=_csv, default=[], help="steps to run again even if done, e.g. copy"
    )
    r.add_argument(
        "--list-targets", action="store_true", help="print the Dockerfile's targets and exit"
    )
    r.add_argument(
        "--stop", action="store_true", help="stop the JupyterLab bootstrap started on the host"
    )
    r.add_argument(
        "--no-input", action="store_true", help="never prompt (default when stdin is no terminal)"
    )
    p.set_defaults(func=main)


def _csv(text: str) -> list[str]:
    return [t.strip().lower() for t in text.split(",") if t.strip()]


def say(msg: str) -> None:
    print(msg, flush=True)


def gather(args, interactive: bool) -> Settings:
    """Saved settings, updated by flags, completed by prompts on a first run."""
    first = not (config_dir() / "bootstrap.json").exists()
    settings = load_settings()
    for field in _SAVED:
        value = getattr(args, field, None)
        if value is not None:
            setattr(settings, field, value)
    for field in ASKED:
        value = getattr(settings, field)
        if value or getattr(args, field, None) is not None:
            continue
        if not (first or field in settings.missing()):
            continue
        if not interactive:
            if field in settings.missing():
                raise BootstrapError(
                    f"no {field.replace('_', ' ')} known and no terminal to ask on: "
                    f"give --{field.replace('_', '-')}"
                )
            continue
        prompt = PROMPTS[field]
        if field == "targets":
            try:
                prompt += f" [{', '.join(model_targets(settings.dockerfile))}]"
            except (DockerfileError, OSError):
                pass  # the build step reports a missing or broken Dockerfile
        answer = input(f"{prompt}: ").strip()
        setattr(settings, field, _csv(answer) if field == "targets" else answer)
    if settings.dockerfile and os.path.exists(settings.dockerfile):
        # Remembered absolute, so a later run from another directory finds the same file.
        settings.dockerfile = os.path.abspath(settings.dockerfile)
    if settings.missing():
        raise BootstrapError(f"{', '.join(settings.missing())} cannot be empty")
    return settings


def main(args) -> int:
    interactive = sys.stdin.isatty() and not args.no_input
    try:
        if args.list_targets:
            say("\n".join(dockerfile_targets(args.dockerfile or load_settings().dockerfile)))
            return 0
        unknown = [s for s in args.redo if s not in STEPS]
        if unknown:
            raise BootstrapError(
                f"--redo {','.join(unknown)}: no such step; the steps are {', '.join(STEPS)}"
            )
        settings = gather(args, interactive)
        save_settings(settings)
        boot = Bootstrap(settings, State(), say, interactive=interactive)
        try:
            if args.stop:
                rec = boot.stop_jupyter()
                say(f"stopped JupyterLab pid {rec['pid']}" if rec else "no JupyterLab was running")
                return 0
            t0 = time.monotonic()
            url = boot.run(until=args.until, connect=args.connect, redo=tuple(args.redo))
            took = ", ".join(f"{k} {v:.1f} s" for k, v in boot.timings.items())
            say(f"ready in {time.monotonic() - t0:.1f} s" + (f" ({took})" if took else ""))
            if boot.failed:
                say(f"finished with failed steps: {', '.join(boot.failed)} (a re-run retries them)")
            if url is None:
                return 1 if boot.failed else 0
            say(f"JupyterLab: {url}")
            say("keeping the connection open; press Ctrl-C to close it (JupyterLab keeps running)")
            try:
                boot.session.wait()
            except KeyboardInterrupt:
                say(
                    "\nclosed the connection; JupyterLab keeps running on the host "
                    "(`scalable bootstrap --connect` reconnects)"
                )
                return 0
            say(
                "the connection to the host closed; run `scalable bootstrap --connect` to reconnect"
            )
            return 1
        finally:
            boot.close()
    except (BootstrapError, SSHError, DockerfileError) as e:
        print(f"scalable bootstrap: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        say("\ninterrupted; run `scalable bootstrap` again to resume")
        return 130
