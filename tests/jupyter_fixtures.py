"""Fixtures and helpers for notebook-side tests: an IPython shell, a real JupyterLab, Chromium.

Import what you need in a test module (``from jupyter_fixtures import shell, lab_server``);
pytest picks fixtures up from the module's namespace.

- ``shell``: a real :class:`IPython.core.interactiveshell.InteractiveShell` (history in memory),
  with a clean user namespace for each test.
- ``LabServer``: ``jupyter lab`` started on a free loopback port with a token and its own
  config/data/runtime directories; ``lab_server`` is the fixture (stopped after the test).
- ``chromium_page(lab, artifacts)``: headless Debian Chromium through Playwright (never
  ``playwright install``), fresh profile, yields a page.
- ``ARTIFACTS``: ``test-artifacts/`` at the repository root (gitignored) for screenshots.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def _ipython():
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.hist_file = ":memory:"
    return InteractiveShell.instance(config=config)


@pytest.fixture
def shell(_ipython):
    """The session's InteractiveShell; variables a test adds are removed after it."""
    # not shell.reset(): it drops __spec__ from __main__, which multiprocessing's spawn needs
    before = set(_ipython.user_ns)
    yield _ipython
    for name in set(_ipython.user_ns) - before:
        del _ipython.user_ns[name]


def execute_request(code: str) -> tuple[str, dict]:
    """A Jupyter ``execute_request`` for ``code`` on the shell channel: ``(msg_id, message)``,
    as JupyterLab's kernel websocket takes it."""
    import uuid

    msg_id = uuid.uuid4().hex
    return msg_id, {
        "header": {
            "msg_id": msg_id,
            "username": "test",
            "session": uuid.uuid4().hex,
            "msg_type": "execute_request",
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "channel": "shell",
        "buffers": [],
        "content": {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
            "stop_on_error": True,
        },
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabServer:
    """A real ``jupyter lab`` on loopback, for browser tests.

    Parameters
    ----------
    root : path
        Notebook directory (also holds the server's private config/data/runtime dirs).
    base_url : str
        The server's base URL (``/`` or e.g. ``/lab-test/``), to exercise proxied links.
    extra_args : list of str
        More ``jupyter lab`` options.
    """

    def __init__(self, root, base_url="/", extra_args=()):
        self.root = Path(root)
        self.port = free_port()
        self.token = os.urandom(12).hex()
        self.base_url = base_url
        self.extra_args = list(extra_args)
        self.proc = None
        self.log = self.root / ".jupyter-lab.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.base_url}"

    def env(self) -> dict:
        private = self.root / ".jupyter-private"
        # the labextension built in this tree (scalable/labextension) comes first on the data
        # path, ahead of the one installed in the environment, so tests see this tree's build
        inherited = os.environ.get("JUPYTER_PATH", "").split(os.pathsep)
        paths = [str(private / "data"), *filter(None, inherited)]
        return {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(private / "config"),
            "JUPYTER_RUNTIME_DIR": str(private / "runtime"),
            "JUPYTER_PATH": os.pathsep.join(paths),
            "IPYTHONDIR": str(private / "ipython"),
            "JUPYTER_PLATFORM_DIRS": "1",
        }

    def _link_labextension(self):
        built = ROOT / "scalable" / "labextension"
        if not (built / "package.json").exists():
            return  # not built here: JupyterLab uses the installed one
        link = self.root / ".jupyter-private" / "data" / "labextensions" / "scalable"
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(built.resolve(), target_is_directory=True)

    def start(self, timeout=90) -> LabServer:
        # news_url=None alone still leaves the "get notified about Jupyter news?" toast
        labconfig = Path(self.env()["JUPYTER_CONFIG_DIR"]) / "labconfig"
        labconfig.mkdir(parents=True, exist_ok=True)
        self._link_labextension()
        (labconfig / "page_config.json").write_text(
            json.dumps(
                {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}
            )
        )
        argv = [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--allow-root",
            "--ip=127.0.0.1",
            f"--port={self.port}",
            "--port-retries=0",
            f"--ServerApp.base_url={self.base_url}",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root}",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            *self.extra_args,
        ]
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(
            argv,
            env=self.env(),
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.api("GET", "api/status")
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"jupyter lab did not start:\n{self.log.read_text()[-3000:]}"
                    ) from None
                time.sleep(0.3)

    def api(self, method, path, body=None):
        """A REST call with the token; returns the decoded JSON (or None)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as r:  # starting a kernel can take a while
            text = r.read()
        return json.loads(text) if text else None

    def put_notebook(self, name, cells) -> str:
        """Write a notebook of code cells (list of source strings); returns its path."""
        nb = {
            "nbformat": 4,
            "nbformat_minor": 5,
            "metadata": {
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
            },
            "cells": [
                {
                    "cell_type": "code",
                    "source": src,
                    "metadata": {},
                    "outputs": [],
                    "execution_count": None,
                    "id": f"c{i}",
                }
                for i, src in enumerate(cells)
            ],
        }
        self.api("PUT", f"api/contents/{name}", {"type": "notebook", "content": nb})
        return name

    def stop(self):
        """Shut down kernels and the server (SIGTERM to its process group, then SIGKILL)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(OSError):
            for k in self.api("GET", "api/kernels") or []:
                self.api("DELETE", f"api/kernels/{k['id']}")
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait(5)


@pytest.fixture
def lab_server(tmp_path):
    """A started :class:`LabServer` rooted at ``tmp_path`` (stopped afterwards)."""
    server = LabServer(tmp_path).start()
    yield server
    server.stop()


def accept_kernel_dialog(page, timeout=10_000) -> bool:
    """Click "Select" if JupyterLab asks which kernel to start (it does now and then)."""
    try:
        page.wait_for_selector(".jp-Dialog button.jp-mod-accept", timeout=timeout)
    except Exception:  # playwright's TimeoutError: no dialog
        return False
    page.click(".jp-Dialog button.jp-mod-accept")
    return True


@contextlib.contextmanager
def chromium_page(viewport=(1400, 900)):
    """A Playwright page in headless Debian Chromium with a fresh profile."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="scalable-chromium-")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch_persistent_context(
                profile,
                executable_path=CHROMIUM,
                args=CHROMIUM_ARGS,
                headless=True,
                viewport={"width": viewport[0], "height": viewport[1]},
            )
            try:
                yield browser.pages[0] if browser.pages else browser.new_page()
            finally:
                browser.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)
