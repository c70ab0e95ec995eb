"""Container runtimes: how ``<runtime> exec`` is spelled.

Apptainer and Singularity take the same arguments. Other runtimes plug in through the
``scalable.runtimes`` entry-point group: a class with the :class:`ContainerRuntime` interface.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points


class ContainerRuntime:
    """Builds the argv that runs a command inside an image.

    Parameters
    ----------
    executable : str
        Name (looked up on ``PATH`` where the command runs) or path of the runtime.
    exec_args : list of str
        Extra arguments placed right after ``exec`` (e.g. ``["--nv"]``).

    Notes
    -----
    Environment variables travel as ``APPTAINERENV_<NAME>`` variables of the runtime's own
    process (set by ``env``), not as ``--env K=V``: the runtime splits ``--env`` values at
    commas, so ``"a,b"`` would arrive as ``"a"`` plus a stray variable.

    Examples
    --------
    >>> rt = Apptainer()
    >>> rt.exec_argv("/w/containers/gcam_container.sif", ["python", "-V"],
    ...              binds={"/data": "/data"}, env={"A": "1,2"}, home="/w", cwd="/w")
    ['env', 'APPTAINERENV_A=1,2', 'apptainer', 'exec', '--bind', '/data:/data', '--home', '/w', '--pwd', '/w', '/w/containers/gcam_container.sif', 'python', '-V']
    """

    name = "apptainer"
    #: prefix of the variables the runtime passes into the container, without the prefix
    env_prefix = "APPTAINERENV_"

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
        """Return ``[env, <PREFIX>K=V..., runtime, "exec", <options>, image, *command]``
        (without ``env`` when there are no variables)."""
        argv = [f"{self.env_prefix}{key}={value}" for key, value in (env or {}).items()]
        argv = (["env", *argv] if argv else []) + [self.executable, "exec", *self.exec_args]
        for src, dst in (binds or {}).items():
            argv += ["--bind", f"{src}:{dst}"]
        if home:
            argv += ["--home", home]
        if cwd:
            argv += ["--pwd", cwd]
        return argv + [image, *command]


class Apptainer(ContainerRuntime):
    name = "apptainer"


class Singularity(ContainerRuntime):
    name = "singularity"
    env_prefix = "SINGULARITYENV_"


def get_runtime(name: str, exec_args: Sequence[str] = ()) -> ContainerRuntime:
    """Return the runtime registered under ``name``; an unknown name is run as an
    apptainer-compatible executable of that name (e.g. a site wrapper)."""
    for ep in entry_points(group="scalable.runtimes"):
        if ep.name == name:
            return ep.load()(exec_args=exec_args)
    return ContainerRuntime(executable=name, exec_args=exec_args)
