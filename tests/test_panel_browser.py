"""The cluster panel in a real notebook: JupyterLab, a real kernel, headless Chromium.

The notebook runs ``%load_ext scalable``, ``%scalable cluster --local``, a container and
``%scalable panel``; the test clicks + like a user and waits until the panel counts a running
worker. The server runs under a base URL, so the panel's dashboard link must be the proxied
``{base_url}proxy/{port}/status``, and that link must serve the dashboard through Jupyter.
The screenshot is kept in ``test-artifacts/panel.png``.
"""

from __future__ import annotations

import re
import time

import pytest

from jupyter_fixtures import ARTIFACTS, LabServer, accept_kernel_dialog, chromium_page

pytestmark = [pytest.mark.browser, pytest.mark.timeout(400)]

BASE_URL = "/lab-test/"


@pytest.fixture
def lab(tmp_path):
    server = LabServer(
        tmp_path, base_url=BASE_URL, extra_args=["--LabApp.expose_app_in_browser=True"]
    ).start()
    yield server
    server.stop()


def test_panel_plus_starts_a_worker(lab, tmp_path):
    (tmp_path / "work").mkdir()
    lab.put_notebook(
        "panel.ipynb",
        [
            "%load_ext scalable",
            f"%scalable cluster --local --work-dir {tmp_path / 'work'}",
            "%scalable container demo --cpus 1 --memory 512M",
            "%scalable panel",
            "%%scalable demo\nimport os\nprint('cell ran in pid', os.getpid())\n6 * 7",
        ],
    )
    ARTIFACTS.mkdir(exist_ok=True)
    with chromium_page() as page:
        try:
            drive(page, lab)
        except BaseException:
            page.screenshot(path=str(ARTIFACTS / "panel-failure.png"), full_page=True)
            raise


def wait_for_panel(page, timeout=120):
    """The panel's element, once the cells ran; a late kernel dialog is answered on the way."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if page.locator(".scalable-panel").count():
            return page.wait_for_selector(".scalable-panel")
        accept_kernel_dialog(page, timeout=500)
    raise AssertionError(f"no panel after {timeout}s: see test-artifacts/panel-failure.png")


def drive(page, lab):
    page.goto(f"{lab.url}lab/tree/panel.ipynb?token={lab.token}")
    page.wait_for_function(
        "() => window.jupyterapp && document.querySelector('.jp-Notebook .jp-Cell')", timeout=60_000
    )
    accept_kernel_dialog(page)
    page.get_by_text(re.compile(r"\| Idle$")).first.wait_for(timeout=60_000)  # kernel ready
    # Run > Run All Cells (not awaited: the command's promise ends with the last cell)
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    panel = wait_for_panel(page)
    row = page.locator(".scalable-row-demo")
    assert "demo" in row.inner_text() and "1 cpu" in row.inner_text()
    assert "running 0" in row.locator(".scalable-row-counts").inner_text()

    href = page.locator(".scalable-panel a.scalable-dashboard").get_attribute("href")
    assert re.fullmatch(rf"{BASE_URL}proxy/\d+/[A-Za-z0-9_-]{{22}}/status", href), href
    dashboard = page.request.get(f"http://127.0.0.1:{lab.port}{href}?token={lab.token}")
    assert dashboard.status == 200 and "Dask" in dashboard.text()

    row.locator("button.scalable-plus").click()
    page.wait_for_function(
        "() => /running\\s*1/.test(document.querySelector("
        "'.scalable-row-demo .scalable-row-counts').innerText)",
        timeout=120_000,
    )
    assert row.locator(".scalable-target input").input_value() == "1"

    # the last cell failed during Run All (no worker then); now a worker runs it
    cell = page.locator(".jp-Notebook .jp-Cell").nth(4)
    assert "has no workers to run the cell" in cell.inner_text()
    cell.locator(".jp-InputArea-editor").click()
    page.keyboard.press("Control+Enter")  # run in place
    # the result exactly: the printed pid may contain "42" too
    cell.locator(
        ".jp-OutputArea-output[data-mime-type='text/plain']", has_text=re.compile(r"^\s*42\s*$")
    ).wait_for(timeout=60_000)
    text = cell.inner_text()
    assert "cell ran in pid" in text and "Traceback" not in text and "UsageError" not in text
    panel.scroll_into_view_if_needed()
    page.screenshot(path=str(ARTIFACTS / "panel.png"), full_page=True)
    row.screenshot(path=str(ARTIFACTS / "panel-row.png"))
