"""The cluster's notebook panel: one row per tag with − / + buttons and live counts.

Displaying a cluster (or ``%scalable panel``) shows a :class:`ClusterPanel`: a header (scheduler,
dashboard link through Jupyter's proxy, walltime), one row per container tag (image, cpus, memory,
binds; a target box between − and + buttons; pending / running / idle counts) and a small form to
add a container. Clicks on − / + within ``scalable.jupyter.click-delay`` of each other become
one ``scale_tag(tag, n, wait=False)``, so five quick clicks cost one ``sbatch``. It refreshes itself with a tornado ``PeriodicCallback`` on the cluster's own
loop; each refresh costs one ``tag_status`` (one ``squeue`` on Slurm, no scheduler round trip),
whatever the number of workers. One panel per cluster, cached, as distributed caches its widget.

ipywidgets is imported only when a panel is made; without it :func:`cluster_widget` returns None
and the cluster displays :func:`summary_html` instead.

Examples
--------
>>> cluster.add_container(tag="gcam", cpus=2, memory="4G")   # doctest: +SKIP
>>> cluster                                                  # doctest: +SKIP
(the panel)
>>> panel_of(cluster).plus["gcam"].click()                   # doctest: +SKIP
"""

from __future__ import annotations

import threading
import time

from dask.utils import parse_timedelta

from .. import config
from ..adapt import adapt_text
from . import panel_html

#: Errors a click can cause that the user fixes (shown in the panel, not as a traceback).
_USER_ERRORS = (ValueError, KeyError, RuntimeError, OSError)


def _parse_adapt(text, tag):
    """``"0-10"`` -> (0, 10); ``"2-"`` -> (2, None); ``""`` -> None (adapt off)."""
    text = text.strip()
    if not text:
        return None
    low, dash, high = text.partition("-")
    try:
        low = int(low)
        high = int(high) if high.strip() else None
        if not dash or low < 0 or (high is not None and high < low):
            raise ValueError
    except ValueError:
        raise ValueError(
            f"adapt {text!r} for {tag!r} is not a range: write MIN-MAX, e.g. 0-10 "
            f"(or 2- for no upper limit; empty turns adapt off)."
        ) from None
    return low, high


class ClusterPanel:
    """The widgets of one cluster's panel, and what happens when the user touches them.

    Attributes
    ----------
    box : ipywidgets.VBox
        What is displayed.
    plus, minus, target, counts : dict
        Per tag: the + and − buttons, the target box, the counts line.
    status : dict
        The last ``tag_status()`` shown.
    refreshes : int
        Refreshes done; ``last_refresh_seconds`` is how long the last one took.
    """

    def __init__(self, cluster, widgets):
        self.cluster = cluster
        self.w = widgets
        self.plus, self.minus, self.target, self.counts = {}, {}, {}, {}
        self.adapt = {}  # per tag: the adapt range box ("0-10"; empty: off)
        self.refreshes, self.last_refresh_seconds = 0, None
        self.status = {}  # the last tag_status shown
        self._updating = False  # set while the panel itself writes target boxes
        self._lock = threading.Lock()
        self._wanted, self._timers = {}, {}  # per tag: clicked target not applied yet, its timer
        self._tags = ()
        self._closed = False
        self.header = widgets.HTML(panel_html.header(cluster))
        self.message = widgets.HTML("")
        self.rows = widgets.VBox([])
        self.walltime = None
        top = [self.header]
        if hasattr(cluster, "walltime"):
            self.walltime = widgets.Text(
                cluster.walltime,
                description="walltime",
                continuous_update=False,
                layout=widgets.Layout(width="190px"),
            )
            self.walltime.observe(self._on_walltime, "value")
            top.append(self.walltime)
        self.form = self._make_form()
        self.box = widgets.VBox(
            [widgets.HBox(top), self.rows, self.form, self.message],
            layout=widgets.Layout(border="1px solid #ddd", padding="4px"),
        )
        self.box.add_class("scalable-panel")
        self._build_rows()

    # -- building -------------------------------------------------------------------------
    def _make_form(self):
        w = self.w
        small = w.Layout(width="110px")
        self.new_tag = w.Text(placeholder="tag", layout=small)
        self.new_image = w.Text(
            placeholder="image (.sif, optional)", layout=w.Layout(width="220px")
        )
        self.new_cpus = w.BoundedIntText(
            1, min=1, max=1024, description="cpus", layout=w.Layout(width="120px")
        )
        self.new_memory = w.Text("1G", description="memory", layout=w.Layout(width="150px"))
        self.new_binds = w.Text(placeholder="/host:/container, ...", layout=w.Layout(width="200px"))
        self.add_button = w.Button(description="add container", icon="plus")
        self.add_button.on_click(self._on_add_container)
        return w.HBox(
            [
                self.new_tag,
                self.new_image,
                self.new_cpus,
                self.new_memory,
                self.new_binds,
                self.add_button,
            ]
        )

    def _build_rows(self):
        w = self.w
        rows = []
        targets = self.cluster.targets
        for tag in self.cluster.containers:
            desc = w.HTML(
                panel_html.describe(panel_html.spec_of(self.cluster, tag)),
                layout=w.Layout(width="40%"),
            )
            minus = w.Button(
                description="−", tooltip=f"one {tag} worker less", layout=w.Layout(width="32px")
            )
            plus = w.Button(
                description="+", tooltip=f"one {tag} worker more", layout=w.Layout(width="32px")
            )
            box = w.BoundedIntText(
                targets.get(tag, 0), min=0, max=100000, layout=w.Layout(width="70px")
            )
            counts = w.HTML(panel_html.counts({}))
            adapt = w.Text(
                "",
                placeholder="adapt min-max",
                continuous_update=False,
                tooltip=f"adapt {tag} to its waiting tasks, e.g. 0-10; empty: off",
                layout=w.Layout(width="110px"),
            )
            adapt.observe(lambda change, t=tag: self._on_adapt(t, change), "value")
            minus.on_click(lambda _, t=tag: self.set_target(t, self.wanted(t) - 1))
            plus.on_click(lambda _, t=tag: self.set_target(t, self.wanted(t) + 1))
            box.observe(lambda change, t=tag: self._on_box(t, change), "value")
            for b, cls in (
                (minus, "scalable-minus"),
                (plus, "scalable-plus"),
                (box, "scalable-target"),
                (counts, "scalable-row-counts"),
                (adapt, "scalable-adapt"),
            ):
                b.add_class(cls)
            self.plus[tag], self.minus[tag], self.target[tag], self.counts[tag] = (
                plus,
                minus,
                box,
                counts,
            )
            self.adapt[tag] = adapt
            row = w.HBox([desc, minus, box, plus, adapt, counts])
            row.add_class(f"scalable-row-{tag}")
            rows.append(row)
        self.rows.children = rows
        self._tags = tuple(self.cluster.containers)

    # -- user actions ---------------------------------------------------------------------
    def wanted(self, tag) -> int:
        """The target the box shows: a click not applied yet, else the cluster's target."""
        with self._lock:
            return self._wanted.get(tag, self.cluster.targets.get(tag, 0))

    def set_target(self, tag, n):
        """What − / + / the target box do: ask for ``n`` workers of ``tag``.

        The request waits ``scalable.jupyter.click-delay`` for more clicks, then goes to
        ``scale_tag(tag, n, wait=False)`` once: five quick clicks on + are one submission.
        """
        n = max(0, int(n))
        delay = parse_timedelta(config.get("jupyter.click-delay", default="400ms"))
        with self._lock:
            self._wanted[tag] = n
            old = self._timers.pop(tag, None)
            if old is not None:
                old.cancel()
            if delay:
                timer = threading.Timer(delay, self._apply_target, args=(tag,))
                timer.daemon = True
                self._timers[tag] = timer
                timer.start()
        self._write_target(tag)
        if not delay:
            self._apply_target(tag)

    def _apply_target(self, tag):
        with self._lock:
            n = self._wanted.get(tag)
            self._timers.pop(tag, None)
        if n is not None:
            try:
                self.cluster.scale_tag(tag, n, wait=False)
            except _USER_ERRORS as e:
                self._say(str(e), error=True)
            with self._lock:
                if self._wanted.get(tag) == n:  # no newer click meanwhile
                    del self._wanted[tag]
        self._write_target(tag)

    def _on_box(self, tag, change):
        if not self._updating:
            self.set_target(tag, change["new"])

    def _write_target(self, tag):
        self._updating = True
        try:
            self.target[tag].value = self.wanted(tag)
        finally:
            self._updating = False

    def _on_adapt(self, tag, change):
        if self._updating:
            return
        try:
            wanted = _parse_adapt(change["new"], tag)
            if wanted is None:
                self.cluster.stop_adapt(tag)
                self._say(f"{tag}: adapt off")
            else:
                low, high = wanted
                self.cluster.adapt(
                    tag=tag, minimum=low, **({} if high is None else {"maximum": high})
                )
                self._say(
                    f"{tag}: adapting between {low} and {high if high is not None else 'any number of'} workers"
                )
        except _USER_ERRORS as e:
            self._say(str(e), error=True)

    def _write_adapt(self, tag, adapt):
        box = self.adapt.get(tag)
        if box is None or box.value.strip() == adapt_text(adapt):
            return
        self._updating = True
        try:
            box.value = adapt_text(adapt)
        finally:
            self._updating = False

    def _on_walltime(self, change):
        try:
            self.cluster.walltime = change["new"]
            self._say(f"walltime {self.cluster.walltime} for jobs submitted from now on")
        except ValueError as e:
            self._say(str(e), error=True)

    def _on_add_container(self, _=None):
        dirs = {}
        for item in filter(None, (s.strip() for s in self.new_binds.value.split(","))):
            host, _, inside = item.partition(":")
            dirs[host] = inside or host
        try:
            spec = self.cluster.add_container(
                self.new_tag.value.strip(),
                cpus=self.new_cpus.value,
                memory=self.new_memory.value.strip() or None,
                path=self.new_image.value.strip() or None,
                dirs=dirs or None,
            )
        except _USER_ERRORS as e:
            self._say(str(e), error=True)
            return
        self.new_tag.value = self.new_image.value = self.new_binds.value = ""
        self._build_rows()
        self._say(f"container {spec.tag!r} added: press + to start a worker")

    def _say(self, text, error=False):
        color = "#b00" if error else "#555"
        self.message.value = f"<span style='color:{color}'>{panel_html.esc(text)}</span>"

    def closed(self):
        """The cluster is gone (closed here or from the sidebar): zero its counts, grey out
        the controls and say so. Its workers are stopped, so nothing is pending any more."""
        self._closed = True  # a refresh still in flight must not bring the live view back
        with self._lock:
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()
            self._wanted.clear()
        self.status = {tag: {} for tag in self.counts}
        self._updating = True
        try:
            for tag in self.counts:
                self.counts[tag].value = panel_html.counts({})
                self.target[tag].value = 0
        finally:
            self._updating = False
        for widget in [
            *self.plus.values(),
            *self.minus.values(),
            *self.target.values(),
            *self.adapt.values(),
            *self.form.children,
            *([self.walltime] if self.walltime else []),
        ]:
            widget.disabled = True
        self.header.value = panel_html.header(self.cluster, closed=True)
        self.box.add_class("scalable-closed")
        self._say("this cluster is closed: `%scalable cluster --new` starts another")

    # -- live refresh ---------------------------------------------------------------------
    async def refresh(self):
        """One refresh: one ``tag_status`` query, then every row's counts and target."""
        t0 = time.perf_counter()
        try:
            status = await self.cluster._tag_status()
        except Exception as e:  # a failing squeue must not kill the periodic refresh
            self._say(f"status unavailable: {e}", error=True)
            return
        self.apply(status)
        self.refreshes += 1
        self.last_refresh_seconds = time.perf_counter() - t0

    def apply(self, status: dict):
        """Show a ``tag_status()`` result."""
        if self._closed:
            return
        self.status = status
        if tuple(self.cluster.containers) != self._tags:
            self._build_rows()
        for tag, s in status.items():
            if tag in self.counts:
                self.counts[tag].value = panel_html.counts(s)
                self._write_target(tag)
                self._write_adapt(tag, s.get("adapt"))
        self.header.value = panel_html.header(self.cluster)
        if self.walltime is not None and self.walltime.value != self.cluster.walltime:
            self.walltime.value = self.cluster.walltime
        error = self.cluster.last_error
        if error and error != getattr(self, "_shown_error", None):
            self._shown_error = error
            self._say(error, error=True)

    def start(self):
        """Refresh every ``scalable.jupyter.refresh-interval`` on the cluster's loop."""
        from tornado.ioloop import PeriodicCallback

        interval = parse_timedelta(config.get("jupyter.refresh-interval", default="2s"))

        def install():
            pc = PeriodicCallback(self.refresh, interval * 1000)
            # the cluster stops its periodic callbacks when it closes
            self.cluster.periodic_callbacks["scalable-panel"] = pc
            pc.start()

        self.cluster.loop.add_callback(install)
        self.cluster.loop.add_callback(self.refresh)


def panel_of(cluster):
    """The cluster's :class:`ClusterPanel` (made on first use), or None without ipywidgets."""
    if "_scalable_panel" in vars(cluster):
        return cluster._scalable_panel
    try:
        import ipywidgets
    except ImportError:
        ipywidgets = None
    panel = None if ipywidgets is None else ClusterPanel(cluster, ipywidgets)
    cluster._scalable_panel = panel
    if panel is not None:
        panel.start()
    return panel


def cluster_widget(cluster):
    """The widget to display for ``cluster`` (cached), or None without ipywidgets."""
    panel = panel_of(cluster)
    return None if panel is None else panel.box
