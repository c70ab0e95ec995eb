"""Shared fixtures for scalable's tests: a real Slurm cluster, the apptainer stand-in.

- ``slurm`` (session): a :class:`slurm_harness.SlurmTestCluster` (3 nodes cn1..cn3, partitions
  ``slurm`` (default) and ``debug``), started on first use; ``SLURM_CONF`` is set in
  ``os.environ`` for the rest of the session. Tests that use it are marked ``slurm``, and tests
  marked ``slurm`` get it.
- ``apptainer`` (function): puts ``tests/bin`` (the bubblewrap stand-in for ``apptainer`` and
  ``singularity``) first on ``PATH``; returns the stand-in's path. Tests that run a command through
  it are marked ``root``: bubblewrap needs root where unprivileged user namespaces are off.
- ``make_image`` (function): ``make_image("gcam")`` creates ``<tmp>/gcam_container.sif``, a file
  the stand-in accepts as an image; returns its path.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from other_user import other_user  # noqa: F401  (the second-user fixture, for every module)
from slurm_harness import SlurmTestCluster

TESTS_BIN = Path(__file__).parent / "bin"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "slurm" in getattr(item, "fixturenames", ()) and not item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.slurm)


@pytest.fixture(autouse=True)
def _slurm_for_slurm_tests(request):
    # Asked per test, not added to ``item.fixturenames``: that list is shared by all the
    # parameters of a test, so a ``slurm`` parameter would start Slurm for the others too.
    if request.node.get_closest_marker("slurm"):
        request.getfixturevalue("slurm")


@pytest.fixture(scope="session")
def slurm():
    """A real Slurm cluster for the whole session (started once, stopped at the end)."""
    if os.geteuid() != 0:
        pytest.fail("the slurm fixture runs Slurm's daemons and needs root")
    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    ):
        # A terminated session still tears the cluster down (pytest handles KeyboardInterrupt).
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    cluster = SlurmTestCluster().start()
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = cluster.conf
    try:
        yield cluster
    finally:
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before
        cluster.stop()


@pytest.fixture
def apptainer(monkeypatch) -> str:
    """The apptainer stand-in, first on PATH (``singularity`` too) for this test."""
    monkeypatch.setenv("PATH", f"{TESTS_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return str(TESTS_BIN / "apptainer")


@pytest.fixture
def make_image(tmp_path):
    """Factory: ``make_image("gcam")`` -> path of a stand-in image ``gcam_container.sif``."""

    def make(tag: str, directory: str | os.PathLike | None = None) -> str:
        folder = Path(directory) if directory else tmp_path / "containers"
        folder.mkdir(parents=True, exist_ok=True)
        image = folder / f"{tag}_container.sif"
        image.write_text(f"stand-in image for tag {tag}\n")
        return str(image)

    return make
