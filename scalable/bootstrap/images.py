"""Build Dockerfile targets with Docker and convert them to Apptainer SIF images, on this machine.

Images are tagged ``scalable-<target>:bootstrap``; each SIF is ``<target>_container.sif``, the
name workers look for in ``<work_dir>/containers/``. A target whose Docker image id has not
changed since its SIF was made is not converted again (conversion takes minutes).

The conversion runs either in the Dockerfile's ``apptainer`` target (``docker run`` with the
Docker socket mounted, reading ``docker-daemon://`` images) or with a local ``apptainer``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from ..containers import image_name as sif_file_name
from ..runner import CommandError, run

#: what the converter container sees the output directory as
_OUT = "/out"


def image_name(target: str) -> str:
    """The local Docker tag of a built target.

    Examples
    --------
    >>> image_name("gcam")
    'scalable-gcam:bootstrap'
    """
    return f"scalable-{target}:bootstrap"


def sif_name(target: str) -> str:
    """File name of a target's Apptainer image.

    Examples
    --------
    >>> sif_name("scalable")
    'scalable_container.sif'
    """
    return sif_file_name(target)


def stream(argv: list[str], cwd: str | None = None) -> None:
    """Run a long command with its output shown live (build logs, progress bars).

    :func:`scalable.runner.run` captures output, which would leave a user staring at nothing
    for the half hour a model image takes to build; this is its streaming twin for bootstrap.
    """
    try:
        code = subprocess.call(argv, cwd=cwd)
    except FileNotFoundError:
        raise CommandError(argv, 127, "", f"{argv[0]} is not installed or not on PATH") from None
    if code != 0:
        raise CommandError(argv, code, "", "see its output above")


def image_id(docker: str, target: str) -> str | None:
    """The id of a built target's image, or ``None`` if it has not been built."""
    r = run([docker, "image", "inspect", "--format", "{{.Id}}", image_name(target)], check=False)
    return r.stdout.strip() or None if r.returncode == 0 else None


def build(docker: str, dockerfile: str | Path, target: str) -> str:
    """``docker build --target <target>`` with the Dockerfile's directory as context.

    Returns the image id.
    """
    dockerfile = Path(dockerfile).resolve()
    stream(
        [
            docker,
            "build",
            "--file",
            str(dockerfile),
            "--target",
            target,
            "--tag",
            image_name(target),
            str(dockerfile.parent),
        ]
    )
    built = image_id(docker, target)
    if not built:
        raise CommandError(
            [docker, "image", "inspect", image_name(target)],
            1,
            "",
            f"docker reported success but no image {image_name(target)} exists",
        )
    return built


def convert_argv(
    converter: str, docker: str, apptainer: str, target: str, out_dir: Path
) -> list[str]:
    """The command that writes ``<out_dir>/<target>_container.sif`` from the Docker image.

    Examples
    --------
    >>> convert_argv("apptainer", "docker", "apptainer", "gcam", Path("/x"))[:3]
    ['apptainer', 'build', '--force']
    """
    source = f"docker-daemon://{image_name(target)}"
    if converter == "apptainer":
        return [apptainer, "build", "--force", str(out_dir / sif_name(target)), source]
    if converter == "docker":
        # The apptainer target's entrypoint is apptainer; it reads images from the host daemon.
        return [
            docker,
            "run",
            "--rm",
            "--privileged",
            "--volume",
            "/var/run/docker.sock:/var/run/docker.sock",
            "--volume",
            f"{out_dir}:{_OUT}",
            image_name("apptainer"),
            "build",
            "--force",
            f"{_OUT}/{sif_name(target)}",
            source,
        ]
    raise ValueError(f"converter must be 'docker' or 'apptainer', not {converter!r}")


def convert(converter: str, docker: str, apptainer: str, target: str, out_dir: Path) -> Path:
    """Write the SIF image of ``target`` into ``out_dir`` and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stream(convert_argv(converter, docker, apptainer, target, out_dir))
    sif = out_dir / sif_name(target)
    if not sif.exists():
        raise CommandError(
            convert_argv(converter, docker, apptainer, target, out_dir),
            1,
            "",
            f"the converter finished but {sif} was not written",
        )
    return sif


def file_signature(path: Path) -> list:
    """Cheap identity of a file (name, size, mtime) used to notice a changed image."""
    st = os.stat(path)
    return [path.name, st.st_size, int(st.st_mtime)]


def scalable_checkout(dockerfile: str | Path) -> Path | None:
    """The scalable source tree the Dockerfile sits in, or ``None`` (e.g. a copied Dockerfile).

    Examples
    --------
    >>> scalable_checkout("/nowhere/Dockerfile") is None
    True
    """
    root = Path(dockerfile).resolve().parent
    try:
        text = (root / "pyproject.toml").read_text()
    except OSError:
        return None
    return root if re.search(r'^name\s*=\s*"scalable"\s*$', text, re.M) else None


def build_wheel(checkout: Path, out_dir: Path) -> Path:
    """``pip wheel`` scalable from a checkout (no dependencies); return the wheel's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("scalable-*.whl"):
        old.unlink()  # one wheel only, so the one shipped is the one just built
    # With the build backend already here, building in this environment saves downloading it.
    isolation = ["--no-build-isolation"] if _has_build_requirements(checkout) else []
    stream(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            *isolation,
            "--wheel-dir",
            str(out_dir),
            str(checkout),
        ]
    )
    wheels = sorted(out_dir.glob("scalable-*.whl"))
    if not wheels:
        raise CommandError(
            ["pip", "wheel", str(checkout)], 1, "", f"no wheel was written to {out_dir}"
        )
    return wheels[-1]


def _has_build_requirements(checkout: Path) -> bool:
    """Whether this Python has every ``build-system.requires`` of the checkout installed."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        import tomllib
        from packaging.requirements import Requirement
    except ImportError:  # Python 3.10, or no packaging: let pip fetch the backend
        return False
    try:
        requires = tomllib.loads((checkout / "pyproject.toml").read_text())["build-system"][
            "requires"
        ]
        for text in requires:
            req = Requirement(text)
            if not req.specifier.contains(version(req.name), prereleases=True):
                return False
    except (OSError, KeyError, ValueError, PackageNotFoundError):
        return False
    return True


def check_docker(docker: str) -> None:
    """Raise a sentence saying what to do when Docker (client or engine) is not usable."""
    try:
        r = run([docker, "version", "--format", "{{.Server.Version}}"], check=False, timeout=60)
    except CommandError:
        raise CommandError(
            [docker],
            127,
            "",
            f"{docker!r} was not found: install Docker (or give "
            "--docker PATH) to build the container images",
        ) from None
    if r.returncode != 0:
        raise CommandError(
            [docker, "version"],
            r.returncode,
            "",
            "Docker is installed but its engine does not answer: start Docker "
            f"(Docker Desktop or the docker service) and run again ({r.stderr.strip()})",
        )
