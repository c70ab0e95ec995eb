"""Doctests of the scalable package (``--doctest-modules``, see pyproject.toml).

Each example runs in a private temporary directory with its own registry, data and config
directories, so no example reads or writes the user's real files (``~/.local/share/scalable``).
Examples that need Slurm are marked ``# doctest: +SKIP`` where they are written.
"""

import pytest
from _pytest.doctest import DoctestItem

# scalable.jupyter.registry is scalable.registry under its old name (the module replaces itself
# in sys.modules): its doctests are collected once, from scalable/registry.py
collect_ignore = ["scalable/jupyter/registry.py"]


@pytest.fixture(autouse=True)
def _doctests_in_private_directories(request, tmp_path_factory, monkeypatch):
    if isinstance(request.node, DoctestItem):
        home = tmp_path_factory.mktemp("doctest")
        monkeypatch.setenv("SCALABLE_REGISTRY_DIR", str(home / "registry"))
        monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
        monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
        monkeypatch.chdir(home)
