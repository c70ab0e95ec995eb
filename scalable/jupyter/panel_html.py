"""The HTML a cluster shows in a notebook: its header, its tags' rows and counts.

The panel (:mod:`scalable.jupyter.widget`) puts these strings in ``ipywidgets.HTML``; without
ipywidgets a cluster displays :func:`summary_html` alone. Every value from the cluster or the
user is escaped here, once.

Examples
--------
>>> counts({"pending": 1, "running": 2})[:40]
"<span class='scalable-counts'>pending <b"
>>> esc("<gcam>")
'&lt;gcam&gt;'
"""

from __future__ import annotations

import html
import os

from . import links


def esc(value) -> str:
    return html.escape(str(value))


def describe(spec: dict) -> str:
    image = os.path.basename(spec["image"]) if spec.get("image") else "no image"
    binds = ", ".join(f"{k}:{v}" for k, v in spec.get("dirs", {}).items())
    # the tag's own Slurm options, when it has any
    own = " · ".join(
        f"{label} {esc(spec[key])}"
        for key, label in (
            ("queue", "partition"),
            ("account", "account"),
            ("walltime", "walltime"),
            ("gpus", "gpus"),
        )
        if spec.get(key)
    )
    return (
        f"<b>{esc(spec['tag'])}</b> <span title='{esc(spec.get('image') or '')}'>"
        f"{esc(image)}</span> · {spec['cpus']} cpu · {esc(spec['memory'])}"
        + (f" · <span class='scalable-tag-options'>{own}</span>" if own else "")
        + (f" · <span style='font-size:smaller'>{esc(binds)}</span>" if binds else "")
    )


def spec_of(cluster, tag) -> dict:
    """A tag's container and own job options, as the panel describes them."""
    pool = cluster.pools[tag]
    return {**pool.spec.describe(), **pool.options}


def counts(s: dict) -> str:
    starting, retiring = s.get("starting", 0), s.get("retiring", 0)
    counts = (
        f"<span class='scalable-counts'>pending <b>{s.get('pending', 0)}</b> · "
        + (f"starting <b>{starting}</b> · " if starting else "")
        + "running "
        f"<b>{s.get('running', 0)}</b> · idle <b>{s.get('idle', 0)}</b> · busy "
        f"<b>{s.get('busy', 0)}</b> · "
        + (
            f"<span class='scalable-retiring' title='leaving once the results they hold "
            f"are released or moved'>retiring <b>{retiring}</b></span> · "
            if retiring
            else ""
        )
        + f"waiting tasks <b>{s.get('waiting_tasks', 0)}</b></span>"
    )
    if s.get("warning"):
        counts += f"<div class='scalable-warning' style='color:#b26a00'>{esc(s['warning'])}</div>"
    return counts


def header(cluster, closed=False) -> str:
    # a closed cluster's port may be anyone's by now: a proxied link to it would show their
    # page in Jupyter's origin, so its summary links nothing either
    if closed or getattr(getattr(cluster, "status", None), "name", "") in ("closing", "closed"):
        return (
            f"<b>{esc(type(cluster).__name__)}</b> {esc(cluster.name)} · "
            f"<b class='scalable-closed-label'>closed</b>"
        )
    link = links.proxied_link(
        cluster.dashboard_port, dashboard_prefix=getattr(cluster, "dashboard_prefix", None)
    )
    # the proxied link is the link (the Scalable lab extension opens it in a lab tab); the
    # scheduler's address is for reading, not clicking
    dash = (
        f"<a href='{esc(link)}' target='_blank' class='scalable-dashboard' "
        f"style='color:#1565c0;text-decoration:underline'>dashboard</a>"
        if link
        else "no dashboard"
    )
    try:
        address = cluster.scheduler_address
    except AttributeError:
        address = "(not started)"
    return (
        f"<b>{esc(type(cluster).__name__)}</b> {esc(cluster.name)} · scheduler "
        f"<span class='scalable-address'>{esc(address)}</span> · {dash}"
    )


def summary_html(cluster) -> str:
    """The cluster as HTML without widgets: header, and per tag its container and workers.

    Costs no ``squeue``: counts come from the scheduler (running) and the targets.
    """
    running = {}
    try:
        for ws in cluster.scheduler.workers.values():
            for tag in ws.resources or {}:
                running[tag] = running.get(tag, 0) + 1
    except AttributeError:
        pass
    walltime = getattr(cluster, "walltime", None)
    targets = cluster.targets
    rows = (
        "".join(
            f"<tr><td style='text-align:left'>{describe(spec_of(cluster, tag))}</td>"
            f"<td>{targets.get(tag, 0)}</td><td>{running.get(tag, 0)}</td></tr>"
            for tag in cluster.containers
        )
        or "<tr><td colspan='3' style='text-align:left'>no containers yet: "
        "<code>cluster.add_container(tag='gcam', cpus=1, memory='1G')</code></td></tr>"
    )
    return (
        f"<div class='scalable-summary'><p>{header(cluster)}"
        + (f" · walltime {esc(walltime)}" if walltime else "")
        + "</p>"
        "<table><tr><th style='text-align:left'>container</th><th>target</th>"
        f"<th>running</th></tr>{rows}</table></div>"
    )
