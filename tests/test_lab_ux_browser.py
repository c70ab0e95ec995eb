"""The Scalable sidebar's layout, actions and lifecycle in a real JupyterLab and Chromium.

Real ``jupyter lab`` (this tree's labextension build), real ``LocalCluster`` objects made in
real kernels, Debian's Chromium through Playwright. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import time
import urllib.error

import pytest

from jupyter_fixtures import ARTIFACTS, chromium_page
from test_labextension_browser import run_in_kernel, shot_on_failure, start_lab
from test_serverext import scheduler_workers

pytestmark = pytest.mark.browser


@pytest.fixture
def lab(tmp_path, monkeypatch):
    server = start_lab(tmp_path, tmp_path / "registry", monkeypatch)
    yield server
    server.stop()


#: jupyter-server-proxy's known race, upstream of scalable: a message from the proxied server
#: that arrives just after the browser closed its websocket (a plot tab closing) is written to
#: the closed socket, and tornado logs the WebSocketClosedError as uncaught. Nothing is lost.
_PROXY_CLOSE_RACE = re.compile(
    r"[^\n]*Uncaught exception\s*\nTraceback \(most recent call last\):\n"
    r"(?:[ \t][^\n]*\n)*?[ \t]+File \"[^\"]*jupyter_server_proxy/handlers\.py\", line \d+, in message_cb\n"
    r"(?:[ \t][^\n]*\n)*tornado\.websocket\.WebSocketClosedError\n?"
)


def without_proxy_close_race(log: str) -> str:
    """``log`` without the tracebacks of :data:`_PROXY_CLOSE_RACE`; any other one stays."""
    return _PROXY_CLOSE_RACE.sub("", log)


LONG_TAG = "stitches_downscaling_experiment"

# every control of the sidebar (buttons, inputs, selects) lies inside the sidebar's box
OUTSIDE = """() => {
    const bar = document.querySelector('#scalable-sidebar');
    const box = bar.getBoundingClientRect();
    const out = [];
    for (const el of bar.querySelectorAll('button, input, select')) {
        const r = el.getBoundingClientRect();
        if (r.width === 0 && r.height === 0) continue;
        if (r.left < box.left - 0.5 || r.right > box.right + 0.5)
            out.push(`${el.className} ${el.textContent} ${r.left}-${r.right} not in ${box.left}-${box.right}`);
    }
    return {out, count: bar.querySelectorAll('button, input, select').length,
            scrollWidth: bar.scrollWidth, clientWidth: bar.clientWidth, scrollLeft: bar.scrollLeft};
}"""


def make_cluster(lab, tmp_path, notebook, name, tags):
    """A LocalCluster made in the kernel of ``notebook`` (bound to `cluster`); its id, etc."""
    session = lab.api(
        "POST",
        "api/sessions",
        {"path": notebook, "name": notebook, "type": "notebook", "kernel": {"name": "python3"}},
    )
    code = f"""
import concurrent.futures
import json
import re
import time
from scalable import LocalCluster
cluster = LocalCluster(work_dir={str(tmp_path)!r}, name={name!r})
for tag in {list(tags)!r}:
    cluster.add_container(tag=tag, cpus=1, memory="1G")
print(json.dumps({{"id": cluster.cluster_id, "scheduler_address": cluster.scheduler_address,
                  "dashboard_port": cluster.dashboard_port, "tls": cluster._registry_tls(),
                  "dashboard_prefix": cluster.dashboard_prefix or ""}}))
"""
    info = json.loads(run_in_kernel(lab, session["kernel"]["id"], code).strip().splitlines()[-1])
    return session, info


def kernel_run(lab, kernel_id, code):
    """:func:`run_in_kernel` from inside Playwright's sync API (which holds this thread's loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(run_in_kernel, lab, kernel_id, code).result()


def show_sidebar(page, lab):
    """Load JupyterLab and make sure the Scalable sidebar shows (the restorer may have opened it)."""
    page.goto(f"{lab.url}lab?token={lab.token}")
    page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
    tab = page.locator('li[data-id="scalable-sidebar"]')
    tab.wait_for(timeout=30_000)
    if "lm-mod-current" not in (tab.get_attribute("class") or ""):
        tab.click()
    page.locator("#scalable-sidebar").wait_for(state="visible", timeout=30_000)


def set_sidebar_width(page, width):
    # drag the handle between the left area and the main area, as a user does
    handle = page.locator("#jp-main-split-panel > .lm-SplitPanel-handle").first
    box = handle.bounding_box()
    left = page.locator("#jp-left-stack").bounding_box()["x"]
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + 200)
    page.mouse.down()
    page.mouse.move(left + width, box["y"] + 200, steps=5)
    page.mouse.up()
    page.wait_for_function(
        "w => Math.abs(document.querySelector('#scalable-sidebar').getBoundingClientRect().width - w) < 3",
        arg=width,
        timeout=10_000,
    )


def test_layout_at_250_and_400_px_in_light_and_dark(lab, tmp_path):
    session, info = make_cluster(
        lab,
        tmp_path,
        "layout.ipynb",
        "a-cluster-name-much-longer-than-any-sidebar-is-wide",
        ["gcam", "stitches", LONG_TAG],
    )
    with chromium_page() as page:
        errors = []
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda e: errors.append(str(e)))
        with shot_on_failure(page, "scalable-layout"):
            show_sidebar(page, lab)
            card = page.locator(f'.jp-ScalableCluster[data-cluster-id="{info["id"]}"]')
            card.wait_for(timeout=30_000)
            # no Scalable kernelspec here: the launcher says how to install one instead
            page.locator('.jp-LauncherCard[title="How to install the Scalable kernel"]').wait_for(
                timeout=30_000
            )
            assert (
                page.locator(
                    '.jp-LauncherCard[title="A new notebook on the Scalable kernel"]'
                ).count()
                == 0
            )
            for theme in ("light", "dark"):
                if theme == "dark":
                    lab.api(
                        "PUT",
                        "lab/api/settings/@jupyterlab/apputils-extension:themes",
                        {"raw": json.dumps({"theme": "JupyterLab Dark"})},
                    )
                    show_sidebar(page, lab)
                    page.wait_for_function(
                        "() => document.body.dataset.jpThemeLight === 'false'", timeout=30_000
                    )
                    card.wait_for(timeout=30_000)
                for width in (250, 400):
                    set_sidebar_width(page, width)
                    # + then − (one request for the same target): clicking must not scroll
                    row = card.locator(f'.jp-ScalableTag[data-tag="{LONG_TAG}"]')
                    row.locator(".jp-ScalableTag-add").click()
                    assert row.locator(".jp-ScalableTag-target").input_value() == "1"
                    row.locator(".jp-ScalableTag-remove").click()
                    layout = page.evaluate(OUTSIDE)
                    # per tag − target + and the adapt toggle, then close, inserts, plots
                    assert layout["count"] >= 15, layout
                    assert row.locator(".jp-ScalableTag-adaptToggle").is_visible()
                    assert layout["out"] == [], layout["out"]
                    assert (
                        layout["scrollWidth"] <= layout["clientWidth"] and layout["scrollLeft"] == 0
                    ), layout
                    # the adapt editor (min, max, on, close) fits too
                    row.locator(".jp-ScalableTag-adaptToggle").click()
                    editor = card.locator(f'.jp-ScalableTag-adaptEditor[data-tag="{LONG_TAG}"]')
                    editor.wait_for(timeout=10_000)
                    layout = page.evaluate(OUTSIDE)
                    assert layout["count"] >= 19, layout
                    assert layout["out"] == [], layout["out"]
                    assert (
                        layout["scrollWidth"] <= layout["clientWidth"] and layout["scrollLeft"] == 0
                    ), layout
                    page.screenshot(
                        path=str(ARTIFACTS / f"scalable-sidebar-adapt-editor-{width}px-{theme}.png")
                    )
                    editor.locator(".jp-ScalableTag-adaptClose").click()
                    editor.wait_for(state="detached", timeout=10_000)
                    # long names are cut with an ellipsis and given whole on hover
                    name = card.locator(".jp-ScalableCluster-name")
                    # (each refresh redraws the card: ask the one in the page now)
                    page.wait_for_function(
                        'id => { const e = document.querySelector(`.jp-ScalableCluster[data-cluster-id="${id}"] '
                        ".jp-ScalableCluster-name`); return e !== null && e.scrollWidth > e.clientWidth; }",
                        arg=info["id"],
                        timeout=10_000,
                    )
                    assert name.get_attribute("title").startswith("a-cluster-name-much-longer")
                    tag = card.locator(
                        f'.jp-ScalableTag[data-tag="{LONG_TAG}"] .jp-ScalableTag-name'
                    )
                    assert tag.get_attribute("title").startswith(LONG_TAG)
                    page.screenshot(path=str(ARTIFACTS / f"scalable-sidebar-{width}px-{theme}.png"))
            # a typed target: 2 and Enter
            target = card.locator('.jp-ScalableTag[data-tag="gcam"] .jp-ScalableTag-target')
            target.fill("2")
            target.press("Enter")
            page.wait_for_function(
                'id => document.querySelector(`.jp-ScalableCluster[data-cluster-id="${id}"] .jp-ScalableTag[data-tag="gcam"] .jp-ScalableTag-running`).textContent === \'2\'',
                arg=info["id"],
                timeout=180_000,
            )
            assert [
                w["resources"] for w in scheduler_workers(info["scheduler_address"], info["tls"])
            ] == [{"gcam": 1}] * 2
        assert [e for e in errors if "scalable" in e.lower()] == []
    lab.api("DELETE", f"api/sessions/{session['id']}")


def adapt_toggle_text(page, cluster_id, tag):
    return page.evaluate(
        '([id, tag]) => { const b = document.querySelector(`.jp-ScalableCluster[data-cluster-id="${id}"] '
        '.jp-ScalableTag[data-tag="${tag}"] .jp-ScalableTag-adaptToggle`); '
        "return b === null ? null : [b.textContent, b.classList.contains('jp-mod-active')]; }",
        [cluster_id, tag],
    )


def wait_for_cell(page, cluster_id, tag, selector, text, timeout=180_000):
    """Wait until a tag row's cell (or input) shows ``text``."""
    page.wait_for_function(
        '([id, tag, sel, text]) => { const e = document.querySelector(`.jp-ScalableCluster[data-cluster-id="${id}"] '
        '.jp-ScalableTag[data-tag="${tag}"] ${sel}`); '
        "return e !== null && (e.value !== undefined ? e.value : e.textContent) === text; }",
        arg=[cluster_id, tag, selector, text],
        timeout=timeout,
    )


def test_adapt_a_tag_from_the_sidebar(lab, tmp_path):
    """Adapt on from the sidebar sets the pool's range; the tag grows under tasks to its
    maximum and returns to its minimum; typing a target ends adapt, and the sidebar says so."""
    session, info = make_cluster(lab, tmp_path, "adapt.ipynb", "adapting", ["gcam", "stitches"])
    kernel = session["kernel"]["id"]
    # quick adapt decisions (Dask's own settings), so the test sees them within its deadlines
    kernel_run(
        lab,
        kernel,
        """
import dask
dask.config.set({"distributed.adaptive.interval": "300ms", "distributed.adaptive.wait-count": 2,
                 "distributed.adaptive.target-duration": "1s"})
""",
    )

    def adapt_of(tag):
        out = kernel_run(lab, kernel, f"print(json.dumps(cluster.tag_status()[{tag!r}]['adapt']))")
        return json.loads(out.strip().splitlines()[-1])

    # the route's refusals are sentences: its own checks, and the cluster's
    for body, words in [
        ({"tag": "gcam", "minimum": 0, "maximum": 10**6}, "scalable.max-workers-per-tag"),
        ({"tag": "nope", "minimum": 0, "maximum": 2}, "nope"),
    ]:
        with pytest.raises(urllib.error.HTTPError) as refused:
            lab.api("POST", f"scalable/clusters/{info['id']}/adapt", body)
        assert refused.value.code == 400
        assert words in json.loads(refused.value.read())["message"]
    assert adapt_of("gcam") is None

    with chromium_page() as page:
        errors = []
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda e: errors.append(str(e)))
        with shot_on_failure(page, "scalable-adapt"):
            show_sidebar(page, lab)
            card = page.locator(f'.jp-ScalableCluster[data-cluster-id="{info["id"]}"]')
            card.wait_for(timeout=30_000)
            row = card.locator('.jp-ScalableTag[data-tag="gcam"]')
            assert adapt_toggle_text(page, info["id"], "gcam") == ["auto", False]
            row.locator(".jp-ScalableTag-adaptToggle").click()
            editor = card.locator('.jp-ScalableTag-adaptEditor[data-tag="gcam"]')
            # a reversed range is refused in the sidebar, before any request
            editor.locator(".jp-ScalableTag-adaptMin").fill("3")
            editor.locator(".jp-ScalableTag-adaptMax").fill("2")
            editor.locator(".jp-ScalableTag-adaptSet").click()
            assert "more than the maximum" in editor.locator(
                ".jp-ScalableTag-adaptSet"
            ).get_attribute("title")
            assert adapt_of("gcam") is None
            editor.locator(".jp-ScalableTag-adaptMin").fill("0")
            editor.locator(".jp-ScalableTag-adaptMax").fill("2")
            editor.locator(".jp-ScalableTag-adaptSet").click()
            page.wait_for_function(
                'id => { const b = document.querySelector(`.jp-ScalableCluster[data-cluster-id="${id}"] '
                '.jp-ScalableTag[data-tag="gcam"] .jp-ScalableTag-adaptToggle`); '
                "return b !== null && b.classList.contains('jp-mod-active'); }",
                arg=info["id"],
                timeout=30_000,
            )
            assert adapt_toggle_text(page, info["id"], "gcam") == ["auto 0–2", True]
            assert card.locator(".jp-ScalableTag-adaptEditor").count() == 0
            assert adapt_of("gcam") == {"minimum": 0, "maximum": 2}
            assert adapt_of("stitches") is None  # only the tag asked for
            page.screenshot(path=str(ARTIFACTS / "scalable-sidebar-adapting.png"))

            # tasks for gcam: it grows to its maximum, the sidebar shows it
            kernel_run(
                lab,
                kernel,
                """
from scalable import ScalableClient
def slow(i):
    import time
    time.sleep(2)
    return i
client = ScalableClient(cluster)
futures = client.map(slow, range(12), tag="gcam", pure=False)
""",
            )
            wait_for_cell(page, info["id"], "gcam", ".jp-ScalableTag-running", "2")
            done = kernel_run(
                lab, kernel, "print(client.gather(futures) == list(range(12))); del futures"
            )
            assert done.strip().splitlines()[-1] == "True"  # no task lost
            # idle again: back to its minimum, still adapting
            wait_for_cell(page, info["id"], "gcam", ".jp-ScalableTag-target", "0")
            wait_for_cell(page, info["id"], "gcam", ".jp-ScalableTag-running", "0")
            assert adapt_toggle_text(page, info["id"], "gcam") == ["auto 0–2", True]
            assert adapt_of("gcam") == {"minimum": 0, "maximum": 2}

            # a typed target is a manual scale: adapt ends, the toggle says "auto" again
            target = row.locator(".jp-ScalableTag-target")
            target.fill("1")
            target.press("Enter")
            page.wait_for_function(
                'id => { const b = document.querySelector(`.jp-ScalableCluster[data-cluster-id="${id}"] '
                '.jp-ScalableTag[data-tag="gcam"] .jp-ScalableTag-adaptToggle`); '
                "return b !== null && !b.classList.contains('jp-mod-active'); }",
                arg=info["id"],
                timeout=60_000,
            )
            assert adapt_toggle_text(page, info["id"], "gcam") == ["auto", False]
            assert adapt_of("gcam") is None
            wait_for_cell(page, info["id"], "gcam", ".jp-ScalableTag-running", "1")

            # "off" in the editor stops adapting and keeps the workers
            row.locator(".jp-ScalableTag-adaptToggle").click()
            editor.locator(".jp-ScalableTag-adaptMin").fill("1")
            editor.locator(".jp-ScalableTag-adaptMax").fill("3")
            editor.locator(".jp-ScalableTag-adaptSet").click()
            page.wait_for_function(
                'id => { const b = document.querySelector(`.jp-ScalableCluster[data-cluster-id="${id}"] '
                '.jp-ScalableTag[data-tag="gcam"] .jp-ScalableTag-adaptToggle`); '
                "return b !== null && b.textContent === 'auto 1–3'; }",
                arg=info["id"],
                timeout=30_000,
            )
            assert adapt_of("gcam") == {"minimum": 1, "maximum": 3}
            row.locator(".jp-ScalableTag-adaptToggle").click()
            editor.locator(".jp-ScalableTag-adaptOff").click()
            page.wait_for_function(
                'id => { const b = document.querySelector(`.jp-ScalableCluster[data-cluster-id="${id}"] '
                '.jp-ScalableTag[data-tag="gcam"] .jp-ScalableTag-adaptToggle`); '
                "return b !== null && b.textContent === 'auto'; }",
                arg=info["id"],
                timeout=30_000,
            )
            assert adapt_of("gcam") is None
            assert row.locator(".jp-ScalableTag-target").input_value() == "1"
        assert [e for e in errors if "scalable" in e.lower()] == []
    kernel_run(lab, kernel, "client.close()")
    lab.api("DELETE", f"api/sessions/{session['id']}")


def test_plot_tabs_restored_then_closed_with_their_cluster(lab, tmp_path):
    """Reload brings the plot tab back; closing from the sidebar turns the tab and the
    notebook's panel to "closed"; the browser console and the server log stay clean."""
    session, info = make_cluster(lab, tmp_path, "life.ipynb", "life", ["alpha"])
    kernel_id = session["kernel"]["id"]
    run_in_kernel(
        lab,
        kernel_id,
        "from scalable.jupyter.widget import panel_of\n"
        "panel = panel_of(cluster)\ncluster.scale_tag('alpha', 1)",
    )
    with chromium_page() as page:
        errors = []
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda e: errors.append(str(e)))
        with shot_on_failure(page, "scalable-lifecycle"):
            show_sidebar(page, lab)
            card = page.locator(f'.jp-ScalableCluster[data-cluster-id="{info["id"]}"]')
            card.wait_for(timeout=30_000)
            card.locator('.jp-ScalableCluster-plot[data-plot="task-stream"]').click()
            card.locator(".jp-ScalableCluster-more").select_option("cpu")
            tab = page.locator('.jp-ScalableDashboard[data-plot="task-stream"]')
            tab.locator("iframe").wait_for(state="attached", timeout=30_000)
            page.locator('.jp-ScalableDashboard[data-plot="cpu"] iframe').wait_for(timeout=30_000)

            # JupyterLab saves the layout to the server a moment later: reload once it has
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                saved = json.dumps(lab.api("GET", "lab/api/workspaces/default"))
                if f"scalable-dashboard-{info['id']}-cpu" in saved:
                    break
                time.sleep(0.5)
            assert f"scalable-dashboard-{info['id']}-cpu" in saved
            page.reload()
            page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
            for plot in ("task-stream", "cpu"):
                restored = page.locator(f'.jp-ScalableDashboard[data-plot="{plot}"] iframe')
                restored.wait_for(state="attached", timeout=60_000)
            src = page.locator(
                '.jp-ScalableDashboard[data-plot="task-stream"] iframe'
            ).get_attribute("src")
            assert f"proxy/{info['dashboard_port']}/" in src and src.endswith(
                "/individual-task-stream"
            )
            page.frame_locator('.jp-ScalableDashboard[data-plot="task-stream"] iframe').locator(
                ".bk-Canvas, canvas"
            ).first.wait_for(state="attached", timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "scalable-restored-tabs.png"))

            show_sidebar_again = page.locator('li[data-id="scalable-sidebar"]')
            if "lm-mod-current" not in (show_sidebar_again.get_attribute("class") or ""):
                show_sidebar_again.click()
            before_close = len(lab.log.read_text())
            card.locator(".jp-ScalableCluster-close").click()
            page.locator(".jp-Dialog button.jp-mod-accept").click()
            for plot in ("task-stream", "cpu"):
                page.locator(
                    f'.jp-ScalableDashboard[data-plot="{plot}"][data-closed="true"]'
                ).wait_for(state="attached", timeout=60_000)
                assert (
                    page.locator(f'.jp-ScalableDashboard[data-plot="{plot}"] iframe').count() == 0
                )
            card.wait_for(state="detached", timeout=30_000)
            page.locator('.lm-TabBar-tab:has-text("Task Stream")').first.click()
            page.screenshot(path=str(ARTIFACTS / "scalable-closed-tab.png"))
            # the notebook's panel says closed and shows no stale counts
            report = tmp_path / "panel.json"
            deadline = time.monotonic() + 60
            while True:  # the kernel finishes closing (status "closed") just after its scheduler
                kernel_run(
                    lab,
                    kernel_id,
                    f"import json, pathlib\npathlib.Path({str(report)!r}).write_text(json.dumps({{"
                    "'message': panel.message.value, 'header': panel.header.value,"
                    " 'targets': [b.value for b in panel.target.values()],"
                    " 'counts': [c.value for c in panel.counts.values()],"
                    " 'status': cluster.status.name}))",
                )
                panel = json.loads(report.read_text())
                if panel["status"] == "closed" or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert (
                panel["status"] == "closed"
                and "closed" in panel["message"]
                and "closed" in panel["header"]
            )
            assert panel["targets"] == [0] and "running <b>0</b>" in panel["counts"][0]
            assert "pending <b>0</b>" in panel["counts"][0]
            page.reload()  # a restored tab of a closed cluster opens closed, never a dead page
            page.locator(
                '.jp-ScalableDashboard[data-plot="task-stream"][data-closed="true"]'
            ).wait_for(state="attached", timeout=60_000)
        assert errors == []
    log = lab.log.read_text()
    # closing leaves nothing reconnecting to the dead dashboard, and nothing fails after it
    assert "ConnectionRefusedError" not in log, log[-3000:]
    assert "Traceback" not in without_proxy_close_race(log[before_close:]), log[before_close:]
    # before it, the one known noise: jupyter-server-proxy writing to a websocket the reload
    # just closed (tornado's WebSocketClosedError), nothing of scalable's
    for tb in log[:before_close].split("Traceback")[1:]:
        assert "WebSocketClosedError" in tb or "StreamClosedError: Stream is closed" in tb, tb
    assert "scalable" not in "".join(log[:before_close].split("Traceback")[1:])
    lab.api("DELETE", f"api/sessions/{session['id']}")


def test_insert_client_into_another_notebook(lab, tmp_path):
    """The "client" button of a cluster made in one notebook inserts, into another notebook, a
    client that runs tasks on that cluster's tagged workers."""
    owner, info = make_cluster(lab, tmp_path, "owner.ipynb", "owner", ["alpha"])
    run_in_kernel(lab, owner["kernel"]["id"], "cluster.add_workers(tag='alpha', n=1)")
    lab.put_notebook("other.ipynb", ["x = 1"])
    with chromium_page() as page:
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        with shot_on_failure(page, "scalable-insert-client"):
            page.goto(f"{lab.url}lab/tree/other.ipynb?token={lab.token}")
            page.get_by_text(re.compile(r"^Python 3 \(ipykernel\) \| Idle$")).wait_for(
                timeout=90_000
            )
            page.locator(".jp-Notebook .jp-Cell").first.click()
            tab = page.locator('li[data-id="scalable-sidebar"]')
            if "lm-mod-current" not in (tab.get_attribute("class") or ""):
                tab.click()
            card = page.locator(f'.jp-ScalableCluster[data-cluster-id="{info["id"]}"]')
            card.wait_for(timeout=30_000)
            card.locator(".jp-ScalableCluster-insert-client").click()
            cells = page.locator(".jp-Notebook .jp-Cell .cm-content")
            page.wait_for_function(
                "() => document.querySelectorAll('.jp-Notebook .jp-Cell').length === 2",
                timeout=30_000,
            )
            code = cells.nth(1).inner_text()
            # secure by default: the client reads the cluster's credentials from the registry
            if info["tls"]:
                assert (
                    f'ScalableClient("{info["scheduler_address"]}", '
                    f'security=security_for("{info["id"]}"))'
                ) in code, code
                assert (
                    "PRIVATE KEY" not in code
                    and "from scalable.jupyter.connect import security_for" in code
                )
            else:
                assert f'ScalableClient("{info["scheduler_address"]}")' in code, code
            cells.nth(1).click()
            page.keyboard.press("Shift+Enter")
            page.locator(".jp-Notebook .jp-Cell").nth(1).locator(
                ".jp-InputPrompt:has-text('[1]')"
            ).wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS / "scalable-inserted-client.png"))
        (other,) = [s for s in lab.api("GET", "api/sessions") if s["path"] == "other.ipynb"]
        out = kernel_run(
            lab,
            other["kernel"]["id"],
            "print(client.submit(lambda: 6 * 7, tag='alpha').result(timeout=120))",
        )
        assert out.strip() == "42"
        # the proxied dashboard link in an output is a link that opens a lab tab
        page.locator(".jp-Notebook .jp-Cell").nth(1).click()
        page.keyboard.press("Escape")
        page.keyboard.press("b")
        page.keyboard.press("Enter")
        page.keyboard.insert_text(
            "from scalable.jupyter.tables import Link\n"
            f"Link({lab.base_url + 'proxy/' + str(info['dashboard_port']) + info['dashboard_prefix'] + '/status'!r}, 'dashboard')"
        )
        page.keyboard.press("Shift+Enter")
        link = page.locator(
            f".jp-OutputArea-output a[href$='proxy/{info['dashboard_port']}{info['dashboard_prefix']}/status']"
        )
        link.wait_for(timeout=60_000)
        pages = len(page.context.pages)
        link.click()
        page.locator('.jp-ScalableDashboard[data-plot="status"] iframe').wait_for(timeout=30_000)
        assert len(page.context.pages) == pages  # no browser tab
        page.screenshot(path=str(ARTIFACTS / "scalable-link-in-a-lab-tab.png"))
        assert errors == []
    run_in_kernel(lab, owner["kernel"]["id"], "cluster.close()")


def test_new_cluster_form_then_insert_its_own_names(lab, tmp_path):
    """ "+ New" (local) runs `%scalable cluster --local` in the active notebook; then "cluster"
    and "client" insert that notebook's own names for them."""
    lab.put_notebook("new.ipynb", ["import os"])
    with chromium_page() as page:
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        with shot_on_failure(page, "scalable-new-cluster"):
            page.goto(f"{lab.url}lab/tree/new.ipynb?token={lab.token}")
            page.get_by_text(re.compile(r"^Python 3 \(ipykernel\) \| Idle$")).wait_for(
                timeout=90_000
            )
            page.locator(".jp-Notebook .jp-Cell").first.click()
            tab = page.locator('li[data-id="scalable-sidebar"]')
            if "lm-mod-current" not in (tab.get_attribute("class") or ""):
                tab.click()
            page.locator(".jp-ScalableSidebar-new").click()
            page.locator(".jp-ScalableNewCluster-kind").select_option("local")
            assert page.locator(".jp-ScalableNewCluster-queue").is_hidden()
            page.screenshot(path=str(ARTIFACTS / "scalable-new-cluster-form.png"))
            page.locator(".jp-Dialog button.jp-mod-accept").click()
            card = page.locator(".jp-ScalableCluster")
            card.wait_for(timeout=120_000)
            cells = page.locator(".jp-Notebook .jp-Cell .cm-content")
            assert cells.nth(1).inner_text() == "%load_ext scalable\n%scalable cluster --local"
            assert (
                card.locator(".jp-ScalableCluster-kernel .jp-ScalableCluster-value").inner_text()
                == "new.ipynb"
            )
            assert re.fullmatch(
                r"local-[0-9a-f]{4}", card.locator(".jp-ScalableCluster-name").inner_text()
            )
            n = page.locator(".jp-Notebook .jp-Cell").count()
            card.locator(".jp-ScalableCluster-insert-cluster").click()
            page.wait_for_function(
                f"() => document.querySelectorAll('.jp-Notebook .jp-Cell').length === {n + 1}",
                timeout=30_000,
            )
            card.locator(".jp-ScalableCluster-insert-client").click()
            page.wait_for_function(
                f"() => document.querySelectorAll('.jp-Notebook .jp-Cell').length === {n + 2}",
                timeout=30_000,
            )
            texts = cells.evaluate_all("cs => cs.map(c => c.innerText)")
            assert texts[-2:] == ["cluster", "client"], texts  # each goes below the active cell
            # drag "client" onto the first cell: a `client` cell is dropped into the notebook
            button = card.locator(".jp-ScalableCluster-insert-client").bounding_box()
            target = page.locator(".jp-Notebook .jp-Cell").first.bounding_box()
            page.mouse.move(button["x"] + 5, button["y"] + 5)
            page.mouse.down()
            page.mouse.move(button["x"] + 40, button["y"] + 20, steps=4)
            page.mouse.move(target["x"] + 60, target["y"] + target["height"] / 2, steps=8)
            page.mouse.up()
            page.wait_for_function(
                f"() => document.querySelectorAll('.jp-Notebook .jp-Cell').length === {n + 3}",
                timeout=30_000,
            )
            assert cells.evaluate_all("cs => cs.map(c => c.innerText)").count("client") == 2
            page.screenshot(path=str(ARTIFACTS / "scalable-new-cluster.png"))
        assert errors == []
