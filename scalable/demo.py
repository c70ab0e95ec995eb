"""``scalable demo``: a two-tag workflow on the embedded local cluster.

A toy "climate" model produces warming pathways on its own pool of workers; a toy "impacts"
model turns each pathway into a damage estimate on another pool. Each function reports the pool
(worker resource) it ran on, so the output shows tag routing at work.
"""

from __future__ import annotations

import os
import time


def climate_pathway(scenario: float, years: int = 80) -> dict:
    """A small energy-balance style warming path for a forcing growth rate ``scenario``."""
    from distributed import get_worker

    temp, path = 1.1, []
    for year in range(years):
        forcing = 2.0 + scenario * year / 10
        temp += 0.08 * (0.8 * forcing - temp)
        path.append(round(temp, 3))
    worker = get_worker()
    return {
        "scenario": scenario,
        "peak": max(path),
        "final": path[-1],
        "tag": next(iter(worker.state.total_resources)),
        "worker": worker.name,
        "pid": os.getpid(),
    }


def impacts(pathway: dict) -> dict:
    """Quadratic damages (percent of output) from a pathway's final warming."""
    from distributed import get_worker

    worker = get_worker()
    damage = round(0.25 * pathway["final"] ** 2, 2)
    return {
        "scenario": pathway["scenario"],
        "damage_pct": damage,
        "tag": next(iter(worker.state.total_resources)),
        "worker": worker.name,
    }


def run_demo(scenarios=(0.1, 0.2, 0.35, 0.5), out=print) -> list:
    """Run the demo workflow and return one result row per scenario."""
    from .client import ScalableClient
    from .local import LocalCluster

    t0 = time.perf_counter()
    with LocalCluster(silence_logs="error") as cluster:
        cluster.add_container(tag="climate", cpus=1, memory="1G")
        cluster.add_container(tag="impacts", cpus=1, memory="1G")
        cluster.add_workers(n=2, tag="climate")
        cluster.add_workers(n=1, tag="impacts")
        with ScalableClient(cluster) as client:
            client.wait_for_workers(3, timeout=120)
            out(
                f"scalable demo: local cluster {cluster.scheduler_address}, "
                f"dashboard {cluster.dashboard_link}"
            )
            out(f"workers per tag: {cluster.targets}")
            paths = client.map(climate_pathway, list(scenarios), tag="climate")
            damages = client.map(impacts, paths, tag="impacts")
            rows = []
            for p, d in zip(client.gather(paths), client.gather(damages)):
                rows.append({**p, "damage_pct": d["damage_pct"], "impacts_tag": d["tag"]})
    out(f"{'scenario':>8} {'peak °C':>8} {'final °C':>9} {'damage %':>9}  ran on")
    for r in rows:
        out(
            f"{r['scenario']:>8} {r['peak']:>8} {r['final']:>9} {r['damage_pct']:>9}  "
            f"{r['tag']} -> {r['impacts_tag']}"
        )
    out(f"done in {time.perf_counter() - t0:.1f} s")
    return rows


def _main(args) -> int:
    rows = run_demo()
    ok = all(r["tag"] == "climate" and r["impacts_tag"] == "impacts" for r in rows)
    return 0 if ok else 1


def register(subparsers):
    p = subparsers.add_parser(
        "demo", help="run a two-tag workflow on the embedded local cluster (no Slurm needed)"
    )
    p.set_defaults(func=_main)
