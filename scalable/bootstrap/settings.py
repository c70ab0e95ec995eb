"""What ``scalable bootstrap`` remembers between runs: the answers and the finished steps.

Both live in the user's config directory (``$XDG_CONFIG_HOME/scalable`` or
``~/.config/scalable``), never in the current directory or ``/tmp``:

- ``bootstrap.json``: the settings asked once (host, user, work directory, identity file,
  targets, ...);
- ``bootstrap-state.json``: for each finished step, a fingerprint of what it was done with, so a
  re-run skips a step only while its inputs are unchanged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

#: settings a user is asked for when they are missing (in this order)
ASKED = ("host", "user", "work_dir", "identity_file", "targets")

PROMPTS = {
    "host": "HPC login host (a name from ~/.ssh/config works)",
    "user": "User name on the HPC (empty: from ~/.ssh/config)",
    "work_dir": "Work directory on the HPC (absolute path)",
    "identity_file": "SSH identity file (empty: ssh's default)",
    "targets": "Container targets to build, comma-separated (scalable is always built)",
}


def config_dir() -> Path:
    """The directory holding scalable's per-user files.

    Examples
    --------
    >>> config_dir().name
    'scalable'
    """
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "scalable"


def cache_dir() -> Path:
    """Where built images are kept on this machine by default (``~/.cache/scalable``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "scalable"


@dataclass
class Settings:
    """Everything a bootstrap run needs to know; saved as ``bootstrap.json``.

    Examples
    --------
    >>> s = Settings(host="hpc", work_dir="/scratch/me/work", targets=["gcam"])
    >>> s.image_targets()
    ['scalable', 'gcam']
    """

    host: str = ""
    user: str = ""
    work_dir: str = ""
    identity_file: str = ""
    targets: list[str] = field(default_factory=list)
    ssh_config: str = ""  # ssh -F FILE; empty: ssh's own (~/.ssh/config)
    dockerfile: str = "Dockerfile"
    local_dir: str = ""  # where SIF images are written locally; empty: cache_dir()
    converter: str = "docker"  # "docker": the Dockerfile's apptainer target; "apptainer": local
    docker: str = "docker"
    apptainer: str = "apptainer"
    module_load: str = (
        ""  # shell line run on the host before apptainer, e.g. "module load apptainer"
    )
    remote_python: str = ""  # existing interpreter on the host; empty: create <work_dir>/.venv
    remote_pip_spec: str = (
        ""  # what the host env installs; empty: scalable[jupyter]==<this version>
    )
    remote_base_python: str = ""  # interpreter the venv is made from; empty: python3
    system_site_packages: bool = False  # the venv also sees the base interpreter's packages
    python3_wrapper: bool = False  # install <work_dir>/python3, which runs scalable python
    jupyter_port: int = 0  # on the host; 0: a free one
    local_port: int = 0  # on this machine; 0: a free one

    def image_targets(self) -> list[str]:
        """The Dockerfile targets built, ``scalable`` first (the kernel's image)."""
        return ["scalable"] + [t for t in self.targets if t != "scalable"]

    def images_dir(self) -> Path:
        return Path(self.local_dir).expanduser() if self.local_dir else cache_dir() / "containers"

    def base_python(self) -> str:
        return self.remote_base_python or "python3"

    def python(self) -> str:
        """The host-side interpreter JupyterLab and the kernelspec install run with."""
        return self.remote_python or f"{self.work_dir}/.venv/bin/python"

    def missing(self) -> list[str]:
        """Names of required settings still empty."""
        return [k for k in ("host", "work_dir") if not getattr(self, k)]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Settings:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError:
        # A damaged file must not block the user: start over, as for a first run.
        return {}


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)  # atomic: an interrupted run never leaves half a file


def load_settings(directory: Path | None = None) -> Settings:
    return Settings.from_dict(_read_json((directory or config_dir()) / "bootstrap.json"))


def save_settings(settings: Settings, directory: Path | None = None) -> Path:
    path = (directory or config_dir()) / "bootstrap.json"
    _write_json(path, settings.to_dict())
    return path


def fingerprint(*parts) -> str:
    """A short stable digest of JSON-able values.

    Examples
    --------
    >>> fingerprint("a", 1) == fingerprint("a", 1) != fingerprint("a", 2)
    True
    """
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class State:
    """Finished steps and the fingerprints they were finished with (``bootstrap-state.json``).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> st = State(pathlib.Path(tempfile.mkdtemp()))
    >>> st.done("copy", "abc")
    False
    >>> st.finish("copy", "abc"); st.done("copy", "abc")
    True
    """

    def __init__(self, directory: Path | None = None):
        self.path = (directory or config_dir()) / "bootstrap-state.json"
        self.data = _read_json(self.path)

    def done(self, step: str, fp: str) -> bool:
        return self.data.get("steps", {}).get(step) == fp

    def finish(self, step: str, fp: str) -> None:
        self.data.setdefault("steps", {})[step] = fp
        _write_json(self.path, self.data)

    def forget(self, step: str) -> None:
        if self.data.get("steps", {}).pop(step, None) is not None:
            _write_json(self.path, self.data)

    def get(self, key: str, default=None):
        return self.data.get(key, default)

    def put(self, key: str, value) -> None:
        self.data[key] = value
        _write_json(self.path, self.data)
