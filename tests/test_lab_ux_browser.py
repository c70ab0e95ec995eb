"""The Scalable sidebar's layout, actions and lifecycle in a real JupyterLab and Chromium.

Real ``jupyter lab`` (this tree's labextension build), real ``LocalCluster`` objects made in
real kernels, Debian's Chromium through Playwright. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import json

import pytest

from jupyter_fixtures import ARTIFACTS, chromium_page
from test_labextension_browser import lab, run_in_kernel, shot_on_failure  # noqa: F401
from test_serverext import scheduler_workers

pytestmark = pytest.mark.browser

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
    session = lab.api("POST", "api/sessions", {
        "path": notebook, "name": notebook, "type": "notebook", "kernel": {"name": "python3"}})
    code = f"""
import json
from scalable import LocalCluster
cluster = LocalCluster(work_dir={str(tmp_path)!r}, name={name!r})
for tag in {list(tags)!r}:
    cluster.add_container(tag=tag, cpus=1, memory="1G")
print(json.dumps({{"id": cluster.cluster_id, "scheduler_address": cluster.scheduler_address,
                  "dashboard_port": cluster.dashboard_port}}))
"""
    info = json.loads(run_in_kernel(lab, session["kernel"]["id"], code).strip().splitlines()[-1])
    return session, info


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
    page.wait_for_function("w => Math.abs(document.querySelector('#scalable-sidebar').getBoundingClientRect().width - w) < 3",
                           arg=width, timeout=10_000)


def test_layout_at_250_and_400_px_in_light_and_dark(lab, tmp_path):
    session, info = make_cluster(lab, tmp_path, "layout.ipynb",
                                 "a-cluster-name-much-longer-than-any-sidebar-is-wide",
                                 ["gcam", "stitches", LONG_TAG])
    with chromium_page() as page:
        errors = []
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.on("pageerror", lambda e: errors.append(str(e)))
        with shot_on_failure(page, "scalable-layout"):
            show_sidebar(page, lab)
            card = page.locator(f'.jp-ScalableCluster[data-cluster-id="{info["id"]}"]')
            card.wait_for(timeout=30_000)
            for theme in ("light", "dark"):
                if theme == "dark":
                    lab.api("PUT", "lab/api/settings/@jupyterlab/apputils-extension:themes",
                            {"raw": json.dumps({"theme": "JupyterLab Dark"})})
                    show_sidebar(page, lab)
                    page.wait_for_function("() => document.body.dataset.jpThemeLight === 'false'", timeout=30_000)
                    card.wait_for(timeout=30_000)
                for width in (250, 400):
                    set_sidebar_width(page, width)
                    # + then − (one request for the same target): clicking must not scroll
                    row = card.locator(f'.jp-ScalableTag[data-tag="{LONG_TAG}"]')
                    row.locator(".jp-ScalableTag-add").click()
                    assert row.locator(".jp-ScalableTag-target").input_value() == "1"
                    row.locator(".jp-ScalableTag-remove").click()
                    layout = page.evaluate(OUTSIDE)
                    assert layout["count"] >= 12, layout
                    assert layout["out"] == [], layout["out"]
                    assert layout["scrollWidth"] <= layout["clientWidth"] and layout["scrollLeft"] == 0, layout
                    # long names are cut with an ellipsis and given whole on hover
                    name = card.locator(".jp-ScalableCluster-name")
                    assert name.evaluate("e => e.scrollWidth > e.clientWidth")
                    assert name.get_attribute("title").startswith("a-cluster-name-much-longer")
                    tag = card.locator(f'.jp-ScalableTag[data-tag="{LONG_TAG}"] .jp-ScalableTag-name')
                    assert tag.get_attribute("title").startswith(LONG_TAG)
                    page.screenshot(path=str(ARTIFACTS / f"scalable-sidebar-{width}px-{theme}.png"))
            # a typed target: 2 and Enter
            target = card.locator('.jp-ScalableTag[data-tag="gcam"] .jp-ScalableTag-target')
            target.fill("2")
            target.press("Enter")
            page.wait_for_function(
                "id => document.querySelector(`.jp-ScalableCluster[data-cluster-id=\"${id}\"] .jp-ScalableTag[data-tag=\"gcam\"] .jp-ScalableTag-running`).textContent === '2'",
                arg=info["id"], timeout=180_000)
            assert [w["resources"] for w in scheduler_workers(info["scheduler_address"])] == [{"gcam": 1}] * 2
        assert [e for e in errors if "scalable" in e.lower()] == []
    lab.api("DELETE", f"api/sessions/{session['id']}")
