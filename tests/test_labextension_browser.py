"""The Scalable sidebar in a real JupyterLab, driven by headless Chromium.

A real ``jupyter lab`` (``jupyter_fixtures.LabServer``: own port, token, config and runtime
dirs), real ``scalable.LocalCluster`` objects created in real kernels, Debian's Chromium
through Playwright. Screenshots land in ``test-artifacts/`` for a person to look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time

import pytest

from jupyter_fixtures import ARTIFACTS, LabServer, chromium_page, execute_request
from test_serverext import entry_security, scheduler_workers

pytestmark = pytest.mark.browser

BASE_URL = "/lab-base/"

# How many rectangles of a task prefix the task-stream plot holds (Bokeh 3 data sources).
TASKS_DRAWN = """([prefix, n]) => {
    const doc = window.Bokeh && Bokeh.documents[0];
    if (!doc) return false;
    for (const m of doc.all_models) {
        const d = m.data;
        if (!d) continue;
        const names = d instanceof Map ? d.get('name') : d['name'];
        if (names && Array.from(names).filter(x => x === prefix).length >= n) return true;
    }
    return false;
}"""

# The running count of one tag of one cluster, as the sidebar shows it.
RUNNING_IS = """([id, tag, n]) => {
    const row = document.querySelector(
        `.jp-ScalableCluster[data-cluster-id="${id}"] .jp-ScalableTag[data-tag="${tag}"]`);
    return row !== null && row.querySelector('.jp-ScalableTag-running').textContent === String(n);
}"""


def start_lab(root, registry, monkeypatch) -> LabServer:
    """JupyterLab with its own cluster registry (kernels inherit the variable), no news toast."""
    registry.mkdir(mode=0o700)
    monkeypatch.setenv("SCALABLE_REGISTRY_DIR", str(registry))
    server = LabServer(root, base_url=BASE_URL)
    labconfig = server.root / ".jupyter-private" / "config" / "labconfig"
    labconfig.mkdir(parents=True)
    (labconfig / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}})
    )
    return server.start()


@pytest.fixture
def lab(tmp_path, monkeypatch):
    server = start_lab(tmp_path, tmp_path / "registry", monkeypatch)
    yield server
    server.stop()


def run_in_kernel(lab: LabServer, kernel_id: str, code: str, timeout: float = 120) -> str:
    """Execute ``code`` in a running kernel over the server's websocket; return its stdout."""
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import websocket_connect

    ws_url = lab.url.replace("http://", "ws://") + f"api/kernels/{kernel_id}/channels"
    msg_id, message = execute_request(code)

    async def execute():
        conn = await websocket_connect(
            HTTPRequest(ws_url, headers={"Authorization": f"token {lab.token}"})
        )
        try:
            await conn.write_message(json.dumps(message))
            # the reply (shell) may overtake the output (iopub): done at the kernel's "idle"
            # for this request, which iopub sends after every output of it
            out, error, replied, idle = [], None, None, False
            while replied is None or not idle:
                raw = await asyncio.wait_for(conn.read_message(), timeout)
                if raw is None:
                    raise RuntimeError("the kernel's websocket closed")
                reply = json.loads(raw)
                if reply.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = reply["header"]["msg_type"]
                if kind == "stream" and reply["content"].get("name") == "stdout":
                    out.append(reply["content"]["text"])
                elif kind == "error":
                    error = "\n".join(reply["content"]["traceback"])
                elif kind == "execute_reply":
                    replied = reply["content"]["status"]
                elif kind == "status" and reply["content"].get("execution_state") == "idle":
                    idle = True
            if error or replied != "ok":
                raise RuntimeError(f"kernel code failed: {error}")
            return "".join(out)
        finally:
            conn.close()

    return asyncio.run(execute())


@pytest.fixture
def kernel_cluster(lab, tmp_path):
    """A LocalCluster with tags alpha and beta, made in a notebook's kernel as a user would."""
    session = lab.api(
        "POST",
        "api/sessions",
        {
            "path": "cluster.ipynb",
            "name": "cluster.ipynb",
            "type": "notebook",
            "kernel": {"name": "python3"},
        },
    )
    code = f"""
import json
from scalable import LocalCluster
cluster = LocalCluster(work_dir={str(tmp_path)!r}, name="browser-demo")
cluster.add_container(tag="alpha", cpus=1, memory="1G")
cluster.add_container(tag="beta", cpus=1, memory="1G")
print(json.dumps({{"id": cluster.cluster_id, "scheduler_address": cluster.scheduler_address,
                  "dashboard_port": cluster.dashboard_port,
                  "dashboard_prefix": cluster.dashboard_prefix, "tls": cluster._registry_tls()}}))
"""
    kernel_id = session["kernel"]["id"]
    try:
        yield json.loads(run_in_kernel(lab, kernel_id, code).strip().splitlines()[-1])
        run_in_kernel(lab, kernel_id, "cluster.close()")
    finally:
        lab.api("DELETE", f"api/sessions/{session['id']}")


def busy_tasks(address: str, tls: dict, tag: str, n: int = 12):
    """Real tasks on the tag's workers, so the task stream has something to draw."""
    from distributed import Client

    def work(i):
        time.sleep(0.2)
        return i

    with Client(address, security=entry_security(tls), timeout=10) as client:
        return client.gather(client.map(work, range(n), resources={tag: 1}, pure=False))


@contextlib.contextmanager
def shot_on_failure(page, name):
    """Keep a screenshot of the page when the block fails (test-artifacts/<name>-failed.png)."""
    try:
        yield
    except BaseException:
        page.screenshot(path=str(ARTIFACTS / f"{name}-failed.png"))
        raise


def open_sidebar(page, lab):
    page.goto(f"{lab.url}lab?token={lab.token}")
    page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
    page.click('li[data-id="scalable-sidebar"]')


def test_sidebar_lists_scales_and_opens_the_task_stream(lab, kernel_cluster):
    with chromium_page() as page:
        errors = []  # anything our plugin logs as an error or throws fails the test
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda e: errors.append(str(e)))
        with shot_on_failure(page, "scalable-sidebar"):
            check_sidebar(page, lab, kernel_cluster, errors)


def check_sidebar(page, lab, kernel_cluster, errors):
    """Listed with its notebook and tags; + adds a worker; the task stream draws its tasks."""
    cluster_id = kernel_cluster["id"]
    address, tls = kernel_cluster["scheduler_address"], kernel_cluster["tls"]
    open_sidebar(page, lab)

    # the kernel's cluster is listed, with its notebook and both tags
    card = page.locator(f'.jp-ScalableCluster[data-cluster-id="{cluster_id}"]')
    card.wait_for(timeout=30_000)
    assert card.locator(".jp-ScalableCluster-name").inner_text() == "browser-demo"
    kernel = card.locator(".jp-ScalableCluster-kernel .jp-ScalableCluster-value")
    assert kernel.inner_text() == "cluster.ipynb"
    assert card.locator(".jp-ScalableTag").evaluate_all("rows => rows.map(r => r.dataset.tag)") == [
        "alpha",
        "beta",
    ]
    page.screenshot(path=str(ARTIFACTS / "scalable-sidebar.png"))

    # + twice on alpha, quicker than a worker starts: the target shows 2 at once, the clicks
    # go out as one scale request (one submission), then two workers connect (sidebar and
    # scheduler agree)
    alpha = card.locator('.jp-ScalableTag[data-tag="alpha"]')
    assert alpha.locator(".jp-ScalableTag-add").is_visible()
    scale_posts = []
    page.on(
        "request",
        lambda r: (
            r.method == "POST"
            and r.url.split("?")[0].endswith("/scale")
            and scale_posts.append(r.post_data_json)
        ),
    )
    plus = f'.jp-ScalableCluster[data-cluster-id="{cluster_id}"] .jp-ScalableTag[data-tag="alpha"] .jp-ScalableTag-add'
    # each click redraws the row, so the second click finds the new button
    page.evaluate(
        "sel => { document.querySelector(sel).click(); document.querySelector(sel).click(); }", plus
    )
    assert alpha.locator(".jp-ScalableTag-target").input_value() == "2"
    page.wait_for_function(RUNNING_IS, arg=[cluster_id, "alpha", 2], timeout=90_000)
    assert scale_posts == [{"tag": "alpha", "n": 2}], scale_posts
    assert alpha.locator(".jp-ScalableTag-target").input_value() == "2"
    assert [w["resources"] for w in scheduler_workers(address, tls)] == [{"alpha": 1}] * 2
    page.screenshot(path=str(ARTIFACTS / "scalable-sidebar-scaled.png"))

    # the task stream opens in a lab tab through the proxy and draws the tasks
    card.locator('.jp-ScalableCluster-plot[data-plot="task-stream"]').click()
    tab = page.locator('.jp-ScalableDashboard[data-plot="task-stream"]')
    tab.wait_for(timeout=30_000)
    src = tab.locator("iframe").get_attribute("src")
    secret = kernel_cluster["dashboard_prefix"]
    assert (
        src == f"{BASE_URL}proxy/{kernel_cluster['dashboard_port']}{secret}/individual-task-stream"
    )
    page.frame_locator(".jp-ScalableDashboard iframe").locator("canvas").first.wait_for(
        timeout=60_000
    )
    assert busy_tasks(address, tls, "alpha") == list(range(12))
    # the plot's own data (Bokeh's, in the proxied page) holds the 12 tasks just run
    plot = page.frame(url=lambda u: u.endswith("/individual-task-stream"))
    plot.wait_for_function(TASKS_DRAWN, arg=["work", 12], timeout=30_000)
    page.wait_for_timeout(1000)  # let the canvas paint what the data says
    page.screenshot(path=str(ARTIFACTS / "scalable-task-stream.png"))
    current = page.locator("#jp-main-dock-panel .lm-TabBar-tab.lm-mod-current")
    assert current.inner_text().startswith("Task Stream")
    assert [e for e in errors if "scalable" in e.lower()] == []


def test_scalable_notebook_from_the_launcher(tmp_path, monkeypatch, apptainer, make_image):
    """The user's path: launcher item -> notebook on the Scalable kernel (inside its image) ->
    a cluster typed into a cell -> listed in the sidebar, scaled from it."""
    from scalable.kernel.install import install

    work = tmp_path / "work"
    work.mkdir()
    make_image("scalable", work / "containers")
    prefix = tmp_path / "prefix"
    install(
        prefix=str(prefix),
        image=str(work / "containers" / "scalable_container.sif"),
        work_dir=str(work),
    )
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    registry = tmp_path / "registry"
    lab = start_lab(work, registry, monkeypatch)
    try:
        with chromium_page() as page:
            with shot_on_failure(page, "scalable-launcher"):
                open_sidebar(page, lab)
                page.locator(
                    '.jp-LauncherCard[title="A new notebook on the Scalable kernel"]'
                ).click()
                page.locator(".jp-Notebook .jp-Cell .cm-content").first.wait_for(timeout=60_000)
                # a cell run before the kernel (started inside its image) is connected does nothing
                page.get_by_text(re.compile(r"^Scalable \| Idle$")).wait_for(timeout=90_000)
                page.locator(".jp-Notebook .jp-Cell .cm-content").first.click()
                page.keyboard.insert_text(
                    'import os; from scalable import LocalCluster; cluster = LocalCluster(name="from-launcher"); '
                    'cluster.add_container(tag="gcam", cpus=1, memory="1G"); print(os.environ["APPTAINER_NAME"])'
                )
                page.keyboard.press("Shift+Enter")
                output = page.locator(
                    ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stdout']"
                ).first
                output.wait_for(timeout=90_000)
                assert (
                    output.inner_text().strip() == "scalable_container.sif"
                )  # the kernel ran in the image

                (entry,) = [json.loads(p.read_text()) for p in registry.glob("*.json")]
                card = page.locator(f'.jp-ScalableCluster[data-cluster-id="{entry["id"]}"]')
                card.wait_for(timeout=30_000)
                kernel = card.locator(".jp-ScalableCluster-kernel .jp-ScalableCluster-value")
                assert kernel.inner_text() == "Untitled.ipynb"
                card.locator('.jp-ScalableTag[data-tag="gcam"] .jp-ScalableTag-add').click()
                page.wait_for_function(RUNNING_IS, arg=[entry["id"], "gcam", 1], timeout=60_000)
                workers = scheduler_workers(entry["scheduler_address"], entry["tls"])
                assert [w["resources"] for w in workers] == [{"gcam": 1}]
                page.screenshot(path=str(ARTIFACTS / "scalable-launcher-notebook.png"))
    finally:
        lab.stop()
    # the kernel is gone: its entry is closed or pruned, never listed again
    from scalable.jupyter.registry import list_clusters

    deadline = time.monotonic() + 30
    while list_clusters(directory=registry) and time.monotonic() < deadline:
        time.sleep(0.5)  # the kernel's processes may take a moment to exit
    assert list_clusters(directory=registry) == []
