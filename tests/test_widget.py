"""The cluster panel, driven like a user: set a target, click + and −, add a container."""

from __future__ import annotations

import sys
import time

import dask
import pytest

from jupyter_fixtures import _ipython, shell  # noqa: F401  (fixtures)
from scalable import LocalCluster
from scalable.jupyter import panel_html, widget
from waiting import wait_for as wait_until


@pytest.fixture(autouse=True)
def fast_refresh():
    with dask.config.set({"scalable.jupyter.refresh-interval": "200ms"}):
        yield


def test_panel_on_local_cluster(tmp_path):
    with LocalCluster(work_dir=str(tmp_path)) as cluster:
        cluster.add_container(tag="model", cpus=1, memory="512M")
        box = cluster._widget()
        assert box is cluster._widget()  # cached per cluster
        panel = widget.panel_of(cluster)
        assert panel.box is box
        secret = cluster.dashboard_prefix
        assert f"proxy/{cluster.dashboard_port}{secret}/status" in panel.header.value
        assert panel.walltime is None  # local workers have no walltime

        panel.target["model"].value = 2  # typed into the box
        panel.plus["model"].click()
        assert panel.target["model"].value == 3  # shown at once, applied after the click delay
        wait_until(lambda: cluster.targets == {"model": 3}, what="target 3")
        wait_until(lambda: "running <b>3</b>" in panel.counts["model"].value, what="3 running")
        panel.minus["model"].click()
        wait_until(lambda: cluster.targets == {"model": 2}, what="target 2")
        assert panel.target["model"].value == 2
        wait_until(lambda: "running <b>2</b>" in panel.counts["model"].value, what="2 running")

        # the add-container form, a mistake first
        panel.new_tag.value, panel.new_memory.value = "bad tag", "1G"
        panel.add_button.click()
        assert "is not valid" in panel.message.value and "bad tag" not in cluster.containers
        (tmp_path / "inputs").mkdir()
        panel.new_tag.value, panel.new_binds.value = "other", f"{tmp_path / 'inputs'}:/inputs"
        panel.add_button.click()
        assert cluster.containers["other"].dirs == {str(tmp_path / "inputs"): "/inputs"}
        assert set(panel.plus) == {"model", "other"} and len(panel.rows.children) == 2
        refreshes = panel.refreshes
        wait_until(lambda: panel.refreshes > refreshes + 2, what="refreshes")
    assert "scalable-panel" in cluster.periodic_callbacks
    assert not cluster.periodic_callbacks["scalable-panel"].is_running()  # stopped on close


def test_panel_of_a_cluster_closed_by_the_magic(tmp_path, shell):
    shell.run_line_magic("load_ext", "scalable")
    shell.run_line_magic("scalable", f"cluster --local --work-dir {tmp_path}")
    shell.run_line_magic("scalable", "container model")
    panel = widget.panel_of(shell.user_ns["cluster"])
    shell.run_line_magic("scalable", "close")
    assert panel.plus["model"].disabled and panel.add_button.disabled
    assert "closed" in panel.message.value


@pytest.mark.slurm
def test_panel_on_slurm_clicks_coalesce_and_counts_follow(tmp_path, make_image, apptainer, slurm):
    from scalable import SlurmCluster

    make_image("model", tmp_path / "containers")
    # a click delay far above the clicks' pace, so a stalled test process cannot split them
    with (
        dask.config.set({"scalable.jupyter.click-delay": "20s"}),
        SlurmCluster(
            queue="slurm", interface="lo", walltime="00:10:00", work_dir=str(tmp_path)
        ) as cluster,
    ):
        cluster.add_container(tag="model", cpus=1, memory="200M")
        panel = widget.panel_of(cluster)
        assert panel.walltime.value == "00:10:00"
        panel.walltime.value = "00:15:00"
        assert cluster.walltime == "00:15:00"
        panel.walltime.value = "soon"
        assert "not a Slurm time" in panel.message.value and cluster.walltime == "00:15:00"

        for _ in range(3):  # clicks at a human pace: one submission
            panel.plus["model"].click()
            time.sleep(0.15)
        assert panel.target["model"].value == 3
        wait_until(
            lambda: len([j for j in slurm.squeue("--array") if j["name"].endswith("-model")]) == 3,
            what="3 jobs in squeue",
        )
        assert cluster.slurm_commands["sbatch"] == 1
        wait_until(
            lambda: "running <b>3</b>" in panel.counts["model"].value,
            timeout=120,
            what="3 workers running",
        )

        # one squeue per refresh, whatever the number of workers
        before_q, before_r = cluster.slurm_commands["squeue"], panel.refreshes
        time.sleep(1.5)  # at least one squeue (status readers share one per second)
        wait_until(lambda: panel.refreshes - before_r >= 3, what="3 refreshes")
        queries = cluster.slurm_commands["squeue"] - before_q
        refreshes = panel.refreshes - before_r
        # a refresh under way at either end of the window counts its squeue but not itself
        # (status readers share one squeue per second, so never more than one per refresh)
        assert refreshes >= 3 and 1 <= queries <= refreshes + 1

        panel.minus["model"].click()
        wait_until(lambda: cluster.targets == {"model": 2}, what="target 2")
        wait_until(
            lambda: len([j for j in slurm.squeue() if j["name"].endswith("-model")]) == 2,
            what="one job cancelled",
        )


def shown_by_display(shell, obj) -> dict:
    """What a notebook would receive when ``obj`` is displayed (the published mimebundle)."""
    from IPython.display import display

    shown = []
    publish = shell.display_pub.publish
    shell.display_pub.publish = lambda data, *a, **k: shown.append(data)
    try:
        display(obj)
    finally:
        shell.display_pub.publish = publish
    assert len(shown) == 1
    return shown[0]


def test_without_ipywidgets_the_html_summary_is_shown(tmp_path, monkeypatch, shell):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    with LocalCluster(work_dir=str(tmp_path)) as cluster:
        cluster.add_container(tag="model", cpus=2, memory="1G")
        assert cluster._widget() is None
        html = cluster._repr_html_()
        assert (
            "model" in html
            and "2 cpu" in html
            and f"proxy/{cluster.dashboard_port}{cluster.dashboard_prefix}/" in html
        )
        data = shown_by_display(shell, cluster)
        assert "application/vnd.jupyter.widget-view+json" not in data
        assert "scalable-summary" in data["text/html"]


def test_display_uses_the_widget_mimebundle(tmp_path, shell):
    with LocalCluster(work_dir=str(tmp_path)) as cluster:
        cluster.add_container(tag="model")
        data = shown_by_display(shell, cluster)
        assert "application/vnd.jupyter.widget-view+json" in data
        assert "scalable-summary" in data["text/html"]


def test_panel_of_a_closed_cluster_links_no_dashboard(tmp_path):
    # a closed cluster's port may be taken by anyone: a stale proxied link would show their page
    with LocalCluster(work_dir=str(tmp_path)) as cluster:
        cluster._widget()
        panel = widget.panel_of(cluster)
        assert "proxy/" in panel.header.value
    assert "proxy/" not in panel.header.value and "closed" in panel.header.value
    assert "closed" in panel.message.value
    assert "proxy/" not in panel_html.summary_html(cluster)
