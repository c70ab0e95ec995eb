"""``%scalable``: manage containers and tagged workers from a notebook in one line each.

``%load_ext scalable`` registers :class:`ScalableMagics`. The line magic takes a subcommand
(``%scalable --help`` lists them); ``%%scalable TAG`` runs a cell on a worker of ``TAG``. Every
user mistake comes back as a :class:`~IPython.core.error.UsageError` sentence saying what to
type, never as a traceback.

Examples
--------
In a notebook::

    %load_ext scalable
    %scalable cluster --queue slurm --walltime 02:00:00 --interface ib0
    %scalable container gcam --cpus 10 --memory 20G --bind /rcfs:/rcfs
    %scalable scale gcam 3
    %scalable status

    %%scalable gcam
    import platform
    platform.node()
"""

from __future__ import annotations

import math
import os
import shutil
import time
import uuid

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from traitlets import Unicode

from ..adapt import adapt_text
from . import links, remote
from .magic_parser import HelpShown, build_cell_parser, build_parser, parse, split_pairs
from .magic_words import unknown_tag, user_errors
from .tables import Link, Note, Table

STATUS_COLUMNS = [
    "tag",
    "target",
    "pending",
    "starting",
    "running",
    "busy",
    "idle",
    "retiring",
    "waiting_tasks",
    "adapt",
]
NO_CLUSTER = (
    "there is no cluster yet: type `%scalable cluster --local` (or `%scalable cluster "
    "--queue PARTITION` on Slurm) first."
)


def _alive(obj) -> bool:
    status = getattr(obj, "status", None)
    return obj is not None and getattr(status, "name", status) not in (
        "closing",
        "closed",
        "failed",
    )


@magics_class
class ScalableMagics(Magics):
    """The ``%scalable`` line magic and ``%%scalable TAG`` cell magic, with their state.

    Attributes
    ----------
    cluster : SlurmCluster or LocalCluster or None
        The cluster the magics act on (created by ``%scalable cluster`` or found in the
        notebook's variables).
    client : ScalableClient or None
    """

    cluster_variable = Unicode(
        "cluster", help="Variable `%scalable cluster` binds the cluster to."
    ).tag(config=True)
    client_variable = Unicode(
        "client", help="Variable `%scalable cluster` binds the client to."
    ).tag(config=True)

    def __init__(self, shell=None, **kwargs):
        super().__init__(shell=shell, **kwargs)
        self.cluster = None
        self.client = None
        self._parser = build_parser()
        self._cell_parser = build_cell_parser()
        #: subcommand -> what runs it
        self._commands = {
            "cluster": self._cluster,
            "container": self._container,
            "containers": self._containers,
            "scale": self._scale,
            "add": self._scale,
            "remove": self._scale,
            "adapt": self._adapt,
            "status": self._status,
            "jobs": self._jobs,
            "walltime": self._walltime,
            "dashboard": self._dashboard,
            "logs": self._logs,
            "close": self._close,
            "panel": self._panel,
        }

    @line_cell_magic
    def scalable(self, line, cell=None):
        """Manage a scalable cluster; `%scalable --help` lists the subcommands.

        As a cell magic, `%%scalable TAG` runs the cell on a worker of TAG and shows its output
        and the value of its last line.
        """
        try:
            if cell is not None:
                return self._run_cell(line, cell)
            args = parse(line, self._parser)
            if isinstance(getattr(args, "tag", None), str):
                args.tag = args.tag.lower()  # tags are case-insensitive
            if args.command is None:
                self._parser.print_usage()
                print(
                    "Start with `%scalable cluster --local`; `%scalable --help` lists every subcommand."
                )
                return None
            with user_errors():
                return self._commands[args.command](args)
        except HelpShown:
            return None

    # -- the cluster ----------------------------------------------------------------------
    def _find_cluster(self):
        """The current cluster: ours, else one the notebook made in plain Python."""
        if _alive(self.cluster):
            return self.cluster
        from ..tagged import TaggedCluster

        ns = self.shell.user_ns if self.shell is not None else {}
        found = [v for v in ns.values() if isinstance(v, TaggedCluster) and _alive(v)]
        preferred = ns.get(self.cluster_variable)
        self.cluster = preferred if preferred in found else (found[0] if found else None)
        return self.cluster

    def _need_cluster(self):
        cluster = self._find_cluster()
        if cluster is None:
            raise UsageError(NO_CLUSTER)
        return cluster

    @staticmethod
    def _need_tag(cluster, tag, command):
        """``tag`` if the cluster has it; else a sentence with "did you mean"."""
        from ..containers import check_tag

        tag = check_tag(tag)  # an invalid name: its own sentence; tags are case-insensitive
        if tag in cluster.containers:
            return tag
        raise UsageError(unknown_tag(tag, cluster.containers, f"%scalable {command}"))

    def _need_client(self, cluster):
        if _alive(self.client) and self.client.cluster is cluster:
            return self.client
        from ..client import ScalableClient

        self.client = ScalableClient(cluster)
        return self.client

    def _bind(self, args):
        names = (args.cluster_var or self.cluster_variable, args.client_var or self.client_variable)
        for name in names:
            if not name.isidentifier():
                raise UsageError(f"{name!r} is not a Python variable name: use e.g. --as cluster.")
        self.shell.user_ns[names[0]] = self.cluster
        self.shell.user_ns[names[1]] = self.client
        return names

    def _cluster(self, args):
        kwargs = {"work_dir": args.work_dir, "runtime": args.runtime, "name": args.name}
        slurm_only = {
            "queue": args.queue,
            "account": args.account,
            "walltime": args.walltime,
            "interface": args.interface,
            "prologue": args.prologue,
            "directive": args.directive,
            "workers_per_job": args.workers_per_job,
        }
        given = [k for k, v in slurm_only.items() if v]
        if args.local and given:
            raise UsageError(
                f"--{given[0].replace('_', '-')} is for Slurm clusters: drop it, or drop --local."
            )
        if self._find_cluster() is not None and not args.new:
            names = self._bind(args)
            print(
                f"Reusing {self.cluster.name} ({self.cluster.kind}) as `{names[0]}`: "
                f"add --new to close it and start another."
            )
            return
        # --new: the old cluster closes only once the new one exists (a typo keeps the old)
        old = (self.cluster, self.client) if args.new and self.cluster is not None else None
        if args.local:
            from ..local import LocalCluster

            cluster = LocalCluster(**{k: v for k, v in kwargs.items() if v is not None})
        else:
            if not (shutil.which("sbatch") or os.environ.get("SCALABLE_RELAY")):
                raise UsageError(
                    "Slurm's sbatch is not on this machine: type "
                    "`%scalable cluster --local` to run workers here instead."
                )
            from ..slurm import SlurmCluster

            kwargs.update(slurm_only)
            kwargs["job_script_prologue"] = kwargs.pop("prologue")
            kwargs["job_extra_directives"] = kwargs.pop("directive")
            cluster = SlurmCluster(**{k: v for k, v in kwargs.items() if v is not None})
        if old is not None:
            self._close_cluster(*old)
        self.cluster, self.client = cluster, None
        self._need_client(cluster)
        names = self._bind(args)
        from IPython.display import display

        # the proxied dashboard link is a link; the scheduler's address is text to read
        display(
            Note(
                f"{type(cluster).__name__} {cluster.name} ready: dashboard {{link}}, scheduler "
                f"{cluster.scheduler_address}. Bound `{names[0]}` and `{names[1]}`; next: "
                f"`%scalable container TAG --cpus 1 --memory 1G`.",
                links.dashboard_link(cluster),
            )
        )
        return

    def _close(self, args=None, quiet=False):
        cluster = self._need_cluster()
        self._close_cluster(cluster, self.client)
        self.cluster = self.client = None
        if not quiet:
            print(f"Closed {cluster.name}: its workers are stopped and its jobs cancelled.")

    def _close_cluster(self, cluster, client):
        """Close ``cluster`` (and our client of it); forget the notebook's names for them."""
        if client is not None:
            client.close()
        cluster.close()
        panel = vars(cluster).get("_scalable_panel")
        if panel is not None:
            panel.closed()
        ns = self.shell.user_ns
        for var, obj in list(ns.items()):
            if obj is cluster or (client is not None and obj is client):
                del ns[var]

    # -- containers -----------------------------------------------------------------------
    def _container(self, args):
        cluster = self._need_cluster()
        spec = cluster.add_container(
            args.tag,
            cpus=args.cpus,
            memory=args.memory,
            path=args.image,
            dirs=split_pairs(args.bind, "--bind", args.tag) or None,
            env=split_pairs(args.env, "--env", args.tag) or None,
            **{
                key: value
                for key, value in (
                    ("queue", args.queue),
                    ("account", args.account),
                    ("walltime", args.walltime),
                    ("gpus", args.gpus),
                    ("job_extra_directives", args.directive),
                    ("job_script_prologue", args.prologue),
                )
                if value is not None
            },
        )
        d = spec.describe()
        binds = "".join(f", bind {k}:{v}" for k, v in d["dirs"].items())
        image = d["image"] or "no image (workers run directly)"
        own = "".join(
            f", {k.replace('_', ' ')} {v}" for k, v in cluster.pools[spec.tag].options.items()
        )
        print(
            f"Container {d['tag']!r}: {image}, {d['cpus']} cpu(s), {d['memory']} per worker"
            f"{binds}{own}. Next: `%scalable add {d['tag']} 1`."
        )

    def _containers(self, args):
        cluster = self._need_cluster()
        targets = cluster.targets
        rows = [
            {**spec.describe(), "target": targets.get(tag, 0)}
            for tag, spec in cluster.containers.items()
        ]
        return Table(
            rows,
            ["tag", "image", "cpus", "memory", "dirs", "env", "target"],
            empty="No containers yet: type `%scalable container TAG --cpus 1 --memory 1G`.",
        )

    # -- workers --------------------------------------------------------------------------
    def _scale(self, args):
        cluster = self._need_cluster()
        self._need_tag(cluster, args.tag, args.command)
        if args.command == "scale":
            cluster.scale_tag(args.tag, args.n)
        elif args.command == "add":
            cluster.add_workers(args.tag, args.n)
        else:
            cluster.remove_workers(args.tag, args.n)
        target = cluster.targets[args.tag]
        if getattr(args, "wait", False):
            self._wait_workers(cluster, args.tag, args.timeout)
            print(f"{args.tag}: {target} worker(s) running.")
        else:
            print(f"{args.tag}: target {target} worker(s). `%scalable status` shows them arrive.")

    def _adapt(self, args):
        cluster = self._need_cluster()
        args.tag = self._need_tag(cluster, args.tag, "adapt")
        if args.off:
            cluster.stop_adapt(args.tag)
            print(f"{args.tag}: adapt off; target stays {cluster.targets[args.tag]} worker(s).")
            return
        if args.minimum is None:
            raise UsageError(
                f"say the range: `%scalable adapt {args.tag} 0 10` (minimum, "
                f"maximum), or `%scalable adapt {args.tag} --off`."
            )
        maximum = math.inf if args.maximum is None else args.maximum
        cluster.adapt(tag=args.tag, minimum=args.minimum, maximum=maximum)
        top = "no upper limit" if args.maximum is None else f"at most {args.maximum}"
        print(
            f"{args.tag}: adapting to its waiting tasks, at least {args.minimum} worker(s), "
            f"{top}. `%scalable scale {args.tag} N` turns adapt off."
        )

    @staticmethod
    def _wait_workers(cluster, tag, timeout):
        deadline = time.monotonic() + timeout
        while True:
            s = cluster.tag_status()[tag]
            if s["running"] >= s["target"]:
                return s
            if time.monotonic() > deadline:
                raise UsageError(
                    f"only {s['running']} of {s['target']} {tag} workers connected after "
                    f"{timeout:g} s ({s['pending']} pending): see `%scalable jobs` and "
                    f"`%scalable logs {tag}`."
                )
            time.sleep(0.25)

    def _status(self, args):
        cluster = self._need_cluster()
        if args.tag is not None:
            self._need_tag(cluster, args.tag, "status")
        status = {tag: s for tag, s in cluster.tag_status().items() if args.tag in (None, tag)}
        rows = [
            {"tag": tag, **s, "adapt": adapt_text(s.get("adapt")) or "off"}
            for tag, s in status.items()
        ]
        for s in status.values():
            if s.get("warning"):
                print(s["warning"])
        return Table(
            rows,
            STATUS_COLUMNS,
            empty="No containers yet: type `%scalable container TAG --cpus 1 --memory 1G`.",
        )

    def _jobs(self, args):
        cluster = self._need_cluster()
        return Table(
            cluster.jobs(),
            ["job_id", "tag", "worker", "state", "reason", "node"],
            empty="No jobs: add workers with `%scalable add TAG 1`.",
        )

    def _walltime(self, args):
        cluster = self._need_cluster()
        if not hasattr(cluster, "walltime"):
            raise UsageError(
                "a local cluster has no walltime: its workers run until you remove "
                "them (`%scalable remove TAG N`) or `%scalable close`."
            )
        if args.walltime is not None:
            cluster.walltime = args.walltime
            print(f"Walltime {cluster.walltime} for jobs submitted from now on.")
            return None
        return cluster.walltime

    def _dashboard(self, args):
        cluster = self._need_cluster()
        link = links.dashboard_link(cluster)
        if link is None:
            raise UsageError("this cluster has no dashboard (install bokeh: `pip install bokeh`).")
        return Link(link, f"Dask dashboard of {cluster.name}")

    def _logs(self, args):
        cluster = self._need_cluster()
        self._need_tag(cluster, args.tag, "logs")
        logs = cluster.logs(args.tag, lines=args.lines)
        if not logs:
            where = (
                "local workers log to this kernel's output"
                if cluster.kind == "local"
                else f"no {args.tag} jobs now; `%scalable add {args.tag} 1` starts one"
            )
            print(f"No logs for {args.tag}: {where}.")
        for worker, text in logs.items():
            print(f"== {worker} ==\n{text.rstrip()}\n")

    def _panel(self, args):
        from IPython.display import display

        display(self._need_cluster())

    # -- %%scalable TAG ---------------------------------------------------------------------
    def _run_cell(self, line, cell):
        args = parse(line, self._cell_parser)
        cluster = self._need_cluster()
        with user_errors():
            from ..containers import check_tag

            tag = check_tag(args.tag)
            if tag not in cluster.containers:
                raise UsageError(unknown_tag(tag, cluster.containers, "%%scalable"))
        if not cluster.targets.get(tag):
            raise UsageError(
                f"tag {tag!r} has no workers to run the cell: type `%scalable add {tag} 1` first."
            )
        namespace = {}
        for name in args.push or ():
            if name not in self.shell.user_ns:
                raise UsageError(
                    f"--push {name}: this notebook has no variable {name!r}; "
                    f"define it or fix the name."
                )
            namespace[name] = self.shell.user_ns[name]
        import cloudpickle

        # the model's image has distributed but maybe not scalable: send the code itself
        cloudpickle.register_pickle_by_value(remote)
        client = self._need_client(cluster)
        future = client.submit(
            remote.run_cell,
            cell,
            namespace,
            tag=tag,
            pure=False,
            key=f"scalable-cell-{tag}-{uuid.uuid4().hex[:8]}",
        )
        try:
            outcome = future.result(timeout=args.timeout)
        except TimeoutError:
            future.cancel()
            raise UsageError(
                f"no {tag} worker ran the cell within {args.timeout:g} s: see "
                f"`%scalable status {tag}`."
            ) from None
        except BaseException:
            future.cancel()  # interrupted: do not leave the cell running on the worker's queue
            raise
        return remote.show(outcome)


def load_ipython_extension(ip):
    """Register ``%scalable``; under Jupyter, make Dask print proxied dashboard links."""
    ip.register_magics(ScalableMagics(ip))
    if links.under_jupyter():
        links.use_proxied_dashboard_links()
