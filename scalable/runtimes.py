"""Container runtimes: how ``<runtime> exec`` is spelled.

Apptainer and Singularity take the same arguments. Other runtimes plug in through the
``scalable.runtimes`` entry-point group: a class with the :class:`ContainerRuntime` interface.
"""

from __future__ import annotations

import shutil
from importlib.metadata import entry_points
from typing import Mapping, Sequence


class ContainerRuntime:
    """Builds the argv that runs a command inside an image.

    Parameters
    ----------
    executable : str
        Name (looked up on ``PATH`` where the command runs) or path of the runtime.
    exec_args : list of str
        Extra arguments placed right after ``exec`` (e.g. ``["--nv"]``).

    Examples
    --------
    >>> rt = Apptainer()
    >>> rt.exec_argv("/w/containers/gcam_container.sif", ["python", "-V"],
    ...              binds={"/data": "/data"}, env={"A": "1"}, home="/w", cwd="/w")
    ['apptainer', 'exec', '--bind', '/data:/data', '--env', 'A=1', '--home', '/w', '--pwd', '/w', '/w/containers/gcam_container.sif', 'python', '-V']
    """

    name = "apptainer"

    def __init__(self, executable: str | None = None, exec_args: Sequence[str] = ()):
        self.executable = executable or self.name
        self.exec_args = list(exec_args)

    def which(self) -> str | None:
        """Full path of the runtime on this machine's ``PATH``, or None."""
        return shutil.which(self.executable)

    def exec_argv(
        self,
        image: str,
        command: Sequence[str],
        *,
        binds: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        home: str | None = None,
        cwd: str | None = None,
    ) -> list[str]:
        """Return ``[runtime, "exec", <options>, image, *command]``."""
        argv = [self.executable, "exec", *self.exec_args]
        for src, dst in (binds or {}).items():
            argv += ["--bind", f"{src}:{dst}"]
        for key, value in (env or {}).items():
            argv += ["--env", f"{key}={value}"]
        if home:
            argv += ["--home", home]
        if cwd:
            argv += ["--pwd", cwd]
        return argv + [image, *command]


class Apptainer(ContainerRuntime):
    name = "apptainer"


class Singularity(ContainerRuntime):
    name = "singularity"


def get_runtime(name: str, exec_args: Sequence[str] = ()) -> ContainerRuntime:
    """Return the runtime registered under ``name``; an unknown name is run as an
    apptainer-compatible executable of that name (e.g. a site wrapper)."""
    for ep in entry_points(group="scalable.runtimes"):
        if ep.name == name:
            return ep.load()(exec_args=exec_args)
    return ContainerRuntime(executable=name, exec_args=exec_args)
