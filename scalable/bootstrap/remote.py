"""What bootstrap does on the HPC login host, through the shared SSH connection.

The work directory gets ``containers/`` (the SIF images workers run), ``logs/`` (worker and
JupyterLab logs) and ``.scalable/`` (bootstrap's records there, e.g. the JupyterLab it started).
A host-side Python environment holds JupyterLab and scalable; the "Scalable" kernelspec is
installed under ``<work_dir>/.scalable/jupyter`` and points at ``containers/scalable_container.sif``.
"""

from __future__ import annotations

import posixpath
import shlex
import shutil
from collections.abc import Callable
from pathlib import Path

from .. import __version__
from ..runner import CommandError
from .images import sif_name, stream
from .ssh import SSHSession

#: the layout bootstrap creates in the work directory
LAYOUT = ("containers", "logs", ".scalable")


def jupyter_prefix(work_dir: str) -> str:
    """The ``--prefix`` the Scalable kernelspec is installed under on the host.

    Examples
    --------
    >>> jupyter_prefix("/scratch/me/work")
    '/scratch/me/work/.scalable/jupyter'
    """
    return posixpath.join(work_dir, ".scalable", "jupyter")


def check_host(session: SSHSession, module_load: str = "", base_python: str = "python3") -> dict:
    """Look for apptainer (after the site's ``module load`` line) and Slurm's ``sinfo``.

    One round trip; the host's login shell runs the site's line, which is shell text by nature
    (``module`` is a shell function on most sites).

    Returns
    -------
    dict
        ``{"apptainer": path or "", "sinfo": version or "", "python": path or ""}``
        (``python``: where ``base_python`` was found)
    """
    script = "\n".join(
        [
            module_load or ":",
            'printf "apptainer=%s\\n" "$(command -v apptainer || command -v singularity)"',
            'printf "sinfo=%s\\n" "$(sinfo --version 2>/dev/null)"',
            f'printf "python=%s\\n" "$(command -v {shlex.quote(base_python)})"',
        ]
    )
    out = session.run(["sh", "-c", script], timeout=120).stdout
    found = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return {k: found.get(k, "").strip() for k in ("apptainer", "sinfo", "python")}


def make_layout(session: SSHSession, work_dir: str) -> None:
    """``mkdir -p`` the work directory's layout (idempotent)."""
    if not posixpath.isabs(work_dir):
        raise ValueError(
            f"the work directory must be an absolute path on the host, not {work_dir!r}"
        )
    session.run(["mkdir", "-p", *[posixpath.join(work_dir, d) for d in LAYOUT]], timeout=60)


def copy_files(
    session: SSHSession, files: list[Path], remote_dir: str, say: Callable[[str], None]
) -> str:
    """Copy local files into ``remote_dir`` on the host; unchanged ones are skipped.

    rsync (with progress) skips files whose size and modification time match; without rsync
    (Windows) scp copies them all. Returns the tool used.
    """
    dest = f"{session.host}:{remote_dir}/"
    if shutil.which("rsync"):
        stream(
            [
                "rsync",
                "--archive",
                "--partial",
                "--info=progress2,name1",
                "--human-readable",
                "--rsh",
                session.rsh(),
                *map(str, files),
                dest,
            ]
        )
        return "rsync"
    say("rsync not found on this machine; copying with scp (every file is sent again)")
    stream(["scp", *session.client_options(), *map(str, files), dest])
    return "scp"


def copy_images(
    session: SSHSession, images: list[Path], work_dir: str, say: Callable[[str], None]
) -> str:
    """Copy SIF images to ``<work_dir>/containers/`` (see :func:`copy_files`)."""
    return copy_files(session, images, posixpath.join(work_dir, "containers"), say)


def python_env(
    session: SSHSession,
    work_dir: str,
    remote_python: str,
    pip_spec: str,
    say: Callable[[str], None],
    base_python: str = "python3",
    system_site_packages: bool = False,
    wheel: Path | None = None,
) -> str:
    """Make sure the host has a Python with JupyterLab and scalable; return its interpreter.

    With ``remote_python`` given, that interpreter is checked and used as it is; otherwise
    ``<work_dir>/.venv`` is created (once) from ``base_python`` (seeing its packages too with
    ``system_site_packages``) and ``pip`` installs into it: ``pip_spec`` if given, else the
    local ``wheel`` of scalable (copied over, so the host runs the same scalable as here), else
    ``scalable[jupyter]`` of this version from the package index.
    """
    if remote_python:
        python = remote_python
    else:
        venv = posixpath.join(work_dir, ".venv")
        python = posixpath.join(venv, "bin", "python")
        if session.run(["test", "-x", python], check=False).returncode != 0:
            say(f"creating {venv}")
            session.run(
                [
                    base_python,
                    "-m",
                    "venv",
                    venv,
                    *(["--system-site-packages"] if system_site_packages else []),
                ],
                timeout=600,
            )
        pip = [python, "-m", "pip", "install", "--progress-bar", "off"]
        if pip_spec or not wheel:
            spec = pip_spec or f"scalable[jupyter]=={__version__}"
            say(f"installing {spec} into {venv}")
            # Streamed: pip's progress is the only sign of life for the minutes this takes.
            stream(session.remote_argv([*pip, "--upgrade", spec]))
        else:
            wheels = posixpath.join(work_dir, ".scalable", "wheels")
            session.run(["mkdir", "-p", wheels], timeout=60)
            copy_files(session, [wheel], wheels, say)
            remote_wheel = posixpath.join(wheels, wheel.name)
            say(f"installing {wheel.name}[jupyter] into {venv}")
            stream(session.remote_argv([*pip, "--upgrade", f"{remote_wheel}[jupyter]"]))
            # The same version number may carry other code: replace scalable itself every time.
            stream(session.remote_argv([*pip, "--force-reinstall", "--no-deps", remote_wheel]))
    probe = session.run(
        [python, "-c", "import scalable, jupyterlab; print(scalable.__file__)"],
        check=False,
        timeout=120,
    )
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise CommandError(
            [python, "-c", "import scalable, jupyterlab"],
            probe.returncode,
            "",
            f"{last}; install scalable[jupyter] into {python}'s environment, or drop "
            "--remote-python to let bootstrap create <work_dir>/.venv",
        )
    return python


def install_kernel(
    session: SSHSession, python: str, work_dir: str, say: Callable[[str], None] = print
) -> str:
    """Install the "Scalable" kernelspec on the host, running the kernel in the scalable image."""
    image = posixpath.join(work_dir, "containers", sif_name("scalable"))
    prefix = jupyter_prefix(work_dir)
    r = session.run(
        [
            python,
            "-m",
            "scalable.cli",
            "kernel",
            "install",
            "--name",
            "scalable",
            "--display-name",
            "Scalable",
            "--image",
            image,
            "--work-dir",
            work_dir,
            "--prefix",
            prefix,
        ],
        timeout=300,
    )
    for line in r.stderr.splitlines():
        if line.startswith("warning:"):
            say(f"  {line}")
    return prefix


def install_python3_wrapper(
    session: SSHSession, python: str, work_dir: str, module_load: str = ""
) -> str:
    """Write ``<work_dir>/python3``: ``scalable python`` with this work directory's scalable image,
    as the original's ``python3`` alias was; the host's scalable writes it (``--write-wrapper``)."""
    path = posixpath.join(work_dir, "python3")
    image = posixpath.join(work_dir, "containers", sif_name("scalable"))
    session.run(
        [
            python,
            "-m",
            "scalable.cli",
            "python",
            f"--work-dir={work_dir}",
            f"--image={image}",
            *([f"--module-load={module_load}"] if module_load else []),
            f"--write-wrapper={path}",
        ],
        timeout=120,
    )
    return path


def helper_source() -> str:
    """Text of the host-side JupyterLab helper, sent to the host's Python on stdin."""
    return (Path(__file__).with_name("remote_jupyter.py")).read_text()
