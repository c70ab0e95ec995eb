"""What the Scalable sidebar's actions rely on, without a browser: closing a cluster through
the server, the panel of a closed cluster, reaching another kernel's cluster, the plot pages."""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from pathlib import Path

import pytest

from scalable import LocalCluster
from scalable.jupyter import connect, registry, widget
from test_serverext import (  # noqa: F401
    ClusterProcess,
    error_of,
    fetch_json,
    jp_server_config,
    shared_registry,
)

pytest_plugins = ["pytest_jupyter.jupyter_server"]

PLOTS_TS = Path(__file__).resolve().parent.parent / "labextension" / "src" / "plots.ts"


async def test_close_route_closes_the_cluster_in_its_process(jp_fetch, shared_registry, tmp_path):  # noqa: F811
    proc = ClusterProcess(shared_registry, tmp_path)
    try:
        reply = await fetch_json(
            jp_fetch, "scalable", "clusters", proc.id, "close", method="POST", body=""
        )
        assert reply == {"id": proc.id, "closed": True}
        assert registry.read_entry(proc.id, shared_registry) is None
        assert not registry.is_alive(proc.info | {"host": None})  # its scheduler is gone
        listed = await fetch_json(jp_fetch, "scalable", "clusters")
        assert proc.id not in [c["id"] for c in listed["clusters"]]
        code, text = await error_of(
            jp_fetch, "scalable", "clusters", proc.id, "close", method="POST", body=""
        )
        assert code == 404 and "refresh the list" in text
    finally:
        proc.close()


def test_panel_of_a_cluster_closed_from_outside_says_closed_and_zeroes_counts(tmp_path):
    from distributed.core import rpc

    cluster = LocalCluster(work_dir=str(tmp_path))
    cluster.add_container(tag="model", cpus=1, memory="1G")
    panel = widget.panel_of(cluster)
    panel.apply(
        {
            "model": {
                "target": 2,
                "pending": 2,
                "running": 0,
                "idle": 0,
                "busy": 0,
                "waiting_tasks": 0,
            }
        }
    )
    assert "pending <b>2</b>" in panel.counts["model"].value

    async def close_as_the_server_does():
        conn = rpc(
            cluster.scheduler_address,
            connection_args=cluster.security.get_connection_args("client"),
        )
        try:
            return await conn.scalable_close()
        finally:
            await conn.close_rpc()

    assert asyncio.run(close_as_the_server_does()) == {"status": "OK"}
    deadline = time.monotonic() + 60
    while cluster.status.name != "closed" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cluster.status.name == "closed"
    assert "closed" in panel.message.value and "closed" in panel.header.value
    assert "pending <b>0</b>" in panel.counts["model"].value and panel.target["model"].value == 0
    assert panel.plus["model"].disabled and panel.target["model"].disabled
    assert registry.read_entry(cluster.cluster_id) is None
    # a refresh that was in flight when the cluster closed does not bring the live view back
    panel.apply(
        {
            "model": {
                "target": 2,
                "pending": 2,
                "running": 0,
                "idle": 0,
                "busy": 0,
                "waiting_tasks": 0,
            }
        }
    )
    assert "pending <b>0</b>" in panel.counts["model"].value and "closed" in panel.header.value


def test_default_names_are_short(tmp_path):
    with LocalCluster(work_dir=str(tmp_path)) as cluster:
        assert cluster.name == f"local-{cluster.cluster_id[:4]}"


def test_security_for_reads_the_registry_entry(tmp_path):
    registry_dir = tmp_path / "registry"
    registry_dir.mkdir(mode=0o700)
    for entry in (
        {"id": "plain", "scheduler_address": "tcp://127.0.0.1:1"},
        {
            "id": "secure",
            "scheduler_address": "tls://127.0.0.1:1",
            "tls": {"ca": "/x/ca.pem", "cert": "/x/c.pem", "key": "/x/k.pem"},
        },
    ):
        (registry_dir / f"{entry['id']}.json").write_text(json.dumps(entry))
    assert connect.security_for("plain", registry_dir) is None
    sec = connect.security_for("secure", registry_dir)
    assert (
        sec.require_encryption
        and sec.tls_ca_file == "/x/ca.pem"
        and sec.tls_client_key == "/x/k.pem"
    )
    with pytest.raises(LookupError, match="insert the client again"):
        connect.security_for("gone", registry_dir)


def test_names_of_finds_the_notebooks_variables(tmp_path):
    from scalable import ScalableClient

    with LocalCluster(work_dir=str(tmp_path)) as cluster, ScalableClient(cluster) as c:
        names = connect.names_of(
            cluster.cluster_id, {"_": cluster, "my_cluster": cluster, "c": c, "x": 1}
        )
        assert names == {"cluster": "my_cluster", "client": "c"}
        assert connect.names_of("other", {"my_cluster": cluster}) == {
            "cluster": None,
            "client": None,
        }


def test_every_plot_the_sidebar_offers_is_a_dask_page(tmp_path):
    paths = re.findall(r"path: '([^']+)'", PLOTS_TS.read_text())
    assert len(paths) >= 15 and "individual-task-stream" in paths
    with LocalCluster(work_dir=str(tmp_path)) as cluster:
        for path in paths:
            root = f"http://127.0.0.1:{cluster.dashboard_port}{cluster.dashboard_prefix or ''}"
            with urllib.request.urlopen(f"{root}/{path}", timeout=60) as r:
                assert r.status == 200, path
