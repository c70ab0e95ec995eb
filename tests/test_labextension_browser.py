"""The Scalable sidebar in a real JupyterLab, driven by headless Chromium.

A real ``jupyter lab`` server (own port, token, own config and data dirs), a real
``scalable.LocalCluster`` in another process (a kernel's cluster), Debian's Chromium through
Playwright. Screenshots land in ``test-artifacts/`` for a person to look at.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from test_serverext import scheduler_workers

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def registry_dir(tmp_path):
    path = tmp_path / "registry"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def lab(tmp_path, registry_dir):
    """A JupyterLab server on a free port; yields its URL (with base_url) and token."""
    port, token = free_port(), secrets.token_hex(16)
    root = tmp_path / "root"
    root.mkdir()
    env = dict(os.environ)
    for name in ("config", "runtime", "home"):
        (tmp_path / name).mkdir()
    # no "get notified about Jupyter news?" toast over the screenshots
    (tmp_path / "config" / "labconfig").mkdir()
    (tmp_path / "config" / "labconfig" / "page_config.json").write_text(json.dumps(
        {"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    env.update(JUPYTER_CONFIG_DIR=str(tmp_path / "config"), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               HOME=str(tmp_path / "home"), SCALABLE_REGISTRY_DIR=str(registry_dir))
    env.pop("JUPYTER_DATA_DIR", None)  # the installed labextension lives in sys.prefix's data dir
    argv = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
            "--port-retries=0", f"--IdentityProvider.token={token}", "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            f"--ServerApp.root_dir={root}", "--ServerApp.base_url=/lab-base/"]
    if os.geteuid() == 0:  # CI and these machines run as root
        argv.append("--allow-root")
    log = open(tmp_path / "jupyter.log", "w")
    proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/lab-base/"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}api/status?token={token}", timeout=2):
                break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError((tmp_path / "jupyter.log").read_text()[-3000:])
            time.sleep(0.3)
    yield url, token
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log.close()


@pytest.fixture
def browser_page(tmp_path):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, args=CHROMIUM_ARGS,
            headless=True, viewport={"width": 1400, "height": 900},
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def rest(url: str, token: str, path: str, method: str = "GET", body=None):
    request = urllib.request.Request(
        f"{url}{path}", method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read()
    return json.loads(text) if text else None


def run_in_kernel(url: str, token: str, kernel_id: str, code: str, timeout: float = 120) -> str:
    """Execute ``code`` in a running kernel over the server's websocket; return its stdout."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    ws_url = url.replace("http://", "ws://") + f"api/kernels/{kernel_id}/channels"
    msg_id = uuid.uuid4().hex
    message = {
        "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
                   "msg_type": "execute_request", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }

    async def execute():
        conn = await websocket_connect(HTTPRequest(ws_url, headers={"Authorization": f"token {token}"}))
        try:
            await conn.write_message(json.dumps(message))
            out, error = [], None
            while True:
                raw = await asyncio.wait_for(conn.read_message(), timeout)
                if raw is None:
                    raise RuntimeError("the kernel's websocket closed")
                reply = json.loads(raw)
                if reply.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = reply["header"]["msg_type"]
                if kind == "stream":
                    out.append(reply["content"]["text"])
                elif kind == "error":
                    error = "\n".join(reply["content"]["traceback"])
                elif kind == "execute_reply":
                    if error or reply["content"]["status"] != "ok":
                        raise RuntimeError(f"kernel code failed: {error}")
                    return "".join(out)
        finally:
            conn.close()

    return asyncio.run(execute())


@pytest.fixture
def kernel_cluster(lab, tmp_path):
    """A LocalCluster with tags alpha and beta, created in a notebook's kernel as a user would."""
    url, token = lab
    session = rest(url, token, "api/sessions", "POST", {
        "path": "cluster.ipynb", "name": "cluster.ipynb", "type": "notebook", "kernel": {"name": "python3"}})
    kernel_id = session["kernel"]["id"]
    code = f"""
import json
from scalable import LocalCluster
cluster = LocalCluster(work_dir={str(tmp_path)!r}, name="browser-demo")
cluster.add_container(tag="alpha", cpus=1, memory="1G")
cluster.add_container(tag="beta", cpus=1, memory="1G")
print(json.dumps({{"id": cluster.cluster_id, "scheduler_address": cluster.scheduler_address,
                  "dashboard_port": cluster.dashboard_port}}))
"""
    try:
        info = json.loads(run_in_kernel(url, token, kernel_id, code).strip().splitlines()[-1])
        yield info
        run_in_kernel(url, token, kernel_id, "cluster.close()")
    finally:
        rest(url, token, f"api/sessions/{session['id']}", "DELETE")


# How many rectangles of a task prefix the task-stream plot holds (Bokeh 3 data sources).
TASKS_DRAWN = """prefix => {
    const doc = window.Bokeh && Bokeh.documents[0];
    if (!doc) return false;
    for (const m of doc.all_models) {
        const d = m.data;
        if (!d) continue;
        const names = d instanceof Map ? d.get('name') : d['name'];
        if (names && Array.from(names).filter(n => n === prefix).length >= 12) return true;
    }
    return false;
}"""


def busy_tasks(address: str, tag: str, n: int = 12):
    """Real tasks on the tag's workers, so the task stream has something to draw."""
    from distributed import Client

    def work(i):
        time.sleep(0.2)
        return i

    with Client(address, timeout=10) as client:
        futures = client.map(work, range(n), resources={tag: 1}, pure=False)
        return client.gather(futures)


def test_sidebar_lists_scales_and_opens_the_task_stream(lab, kernel_cluster, browser_page):
    url, token = lab
    page = browser_page
    cluster_id = kernel_cluster["id"]
    address = kernel_cluster["scheduler_address"]
    page.goto(f"{url}lab?token={token}")
    page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)

    # the Scalable sidebar lists the kernel's cluster, its notebook and both tags
    page.click('li[data-id="scalable-sidebar"]')
    card = page.locator(f'.jp-ScalableCluster[data-cluster-id="{cluster_id}"]')
    card.wait_for(timeout=30_000)
    assert card.locator(".jp-ScalableCluster-name").inner_text() == "browser-demo"
    assert card.locator(".jp-ScalableCluster-kernel .jp-ScalableCluster-value").inner_text() == "cluster.ipynb"
    assert card.locator(".jp-ScalableTag").evaluate_all("rows => rows.map(r => r.dataset.tag)") == [
        "alpha", "beta"]
    page.screenshot(path=str(ARTIFACTS / "scalable-sidebar.png"))

    # + on alpha: the target goes to 1, then a worker connects (sidebar and scheduler agree)
    alpha = card.locator('tr.jp-ScalableTag[data-tag="alpha"]')
    assert alpha.locator(".jp-ScalableTag-add").is_visible()
    alpha.locator(".jp-ScalableTag-add").click()
    page.wait_for_function(
        """id => {
            const row = document.querySelector(
                `.jp-ScalableCluster[data-cluster-id="${id}"] tr[data-tag="alpha"]`);
            return row && row.querySelector('.jp-ScalableTag-running').textContent === '1';
        }""", arg=cluster_id, timeout=60_000)
    assert alpha.locator(".jp-ScalableTag-target").inner_text() == "1"
    assert [w["resources"] for w in scheduler_workers(address)] == [{"alpha": 1}]
    page.screenshot(path=str(ARTIFACTS / "scalable-sidebar-scaled.png"))

    # the task stream opens in a lab tab through the proxy and draws the tasks
    card.locator('.jp-ScalableCluster-plot[data-plot="task-stream"]').click()
    tab = page.locator('.jp-ScalableDashboard[data-plot="task-stream"]')
    tab.wait_for(timeout=30_000)
    src = tab.locator("iframe").get_attribute("src")
    assert src == f"/lab-base/proxy/{kernel_cluster['dashboard_port']}/individual-task-stream"
    frame = page.frame_locator(".jp-ScalableDashboard iframe")
    frame.locator("canvas").first.wait_for(timeout=60_000)
    assert busy_tasks(address, "alpha") == list(range(12))
    # the plot's own data (Bokeh's, in the proxied page) holds the 12 tasks just run
    plot = page.frame(url=lambda u: u.endswith("/individual-task-stream"))
    plot.wait_for_function(TASKS_DRAWN, arg="work", timeout=30_000)
    page.wait_for_timeout(1000)  # let the canvas paint what the data says
    page.screenshot(path=str(ARTIFACTS / "scalable-task-stream.png"))
    current = page.locator("#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current")
    assert current.inner_text().startswith("Task Stream")
