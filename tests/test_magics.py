"""%scalable magics in a real IPython shell, on the local default and on the real test Slurm."""

from __future__ import annotations

import dask
import pytest
from IPython.core.error import UsageError

from jupyter_fixtures import _ipython, shell  # noqa: F401  (fixtures)
from scalable.jupyter import links
from scalable.jupyter.magics import ScalableMagics, _alive
from scalable.jupyter.remote import RemoteCellError


def magic(ip, line):
    return ip.run_line_magic("scalable", line)


@pytest.fixture
def ip(shell):
    shell.run_line_magic("load_ext", "scalable")
    magics = shell.magics_manager.registry["ScalableMagics"]
    yield shell
    if _alive(magics.cluster):
        magics._close(quiet=True)


@pytest.fixture(params=["local", pytest.param("slurm", marks=pytest.mark.slurm)])
def backend(request, tmp_path, make_image, apptainer):
    """The `%scalable cluster` line for each backend; images and a bind source in tmp_path."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "hello.txt").write_text("hi")
    if request.param == "local":
        return "local", f"cluster --local --work-dir {tmp_path}"
    request.getfixturevalue("slurm")
    for tag in ("model", "other"):
        make_image(tag, tmp_path / "containers")
    return "slurm", (
        f"cluster --queue slurm --interface lo --walltime 00:10:00 --work-dir {tmp_path}"
    )


def test_every_subcommand(ip, backend, capsys):
    kind, line = backend
    magic(ip, line)
    cluster, client = ip.user_ns["cluster"], ip.user_ns["client"]
    assert cluster.kind == kind and client.cluster is cluster
    magic(ip, "container model --cpus 1 --memory 300M --bind data:/data --env GREETING=hello")
    magic(ip, "container other --cpus 1 --memory 300M")
    rows = magic(ip, "containers")
    assert [r["tag"] for r in rows] == ["model", "other"]
    assert rows[0]["env"] == {"GREETING": "hello"} and list(rows[0]["dirs"].values()) == ["/data"]
    assert "model" in repr(rows) and "<table" in rows._repr_html_()

    magic(ip, "scale model 2 --wait --timeout 120")
    status = {r["tag"]: r for r in magic(ip, "status")}
    assert status["model"]["running"] == 2 and status["other"]["target"] == 0
    assert status["model"]["starting"] == 0
    assert [r["tag"] for r in magic(ip, "status other")] == ["other"]
    jobs = magic(ip, "jobs")
    assert len(jobs) == 2 and {j["tag"] for j in jobs} == {"model"}
    magic(ip, "add other 1 --wait --timeout 120")
    magic(ip, "remove model 1")
    assert cluster.targets == {"model": 1, "other": 1}

    out = ip.run_cell_magic(
        "scalable", "model", "import os\nprint('greeting', os.environ.get('GREETING'))\n6 * 7"
    )
    assert out == 42
    assert "greeting hello" in capsys.readouterr().out

    link = magic(ip, "dashboard")
    secret = cluster.dashboard_prefix  # the dashboard answers nothing outside it
    assert link.endswith(f":{cluster.dashboard_port}{secret}/status") or link.endswith(
        f"/proxy/{cluster.dashboard_port}{secret}/status"
    )
    magic(ip, "logs model --lines 5")
    logs = capsys.readouterr().out
    if kind == "slurm":
        assert magic(ip, "walltime") == "00:10:00"
        magic(ip, "walltime 00:20:00")
        assert cluster.walltime == "00:20:00"
        assert "== model-" in logs
        assert cluster.slurm_commands["sbatch"] == 2  # one array per burst
        with pytest.raises(UsageError, match="walltime"):
            magic(ip, "walltime soon")
    else:
        assert "No logs for model" in logs
        with pytest.raises(UsageError, match="local cluster has no walltime"):
            magic(ip, "walltime 01:00:00")
    magic(ip, "close")
    assert "cluster" not in ip.user_ns and "client" not in ip.user_ns
    assert cluster.status.name == "closed"
    with pytest.raises(UsageError, match="no cluster yet"):
        magic(ip, "status")


@pytest.mark.slurm
def test_slurm_refusals_are_usage_errors(ip, tmp_path, make_image, apptainer):
    make_image("model", tmp_path / "containers")
    magic(ip, f"cluster --queue nosuch --interface lo --work-dir {tmp_path}")
    magic(ip, "container model --memory 200M")
    with pytest.raises(UsageError, match="Slurm refused the 'model' workers: .*invalid partition"):
        magic(ip, "add model 1")
    assert ip.user_ns["cluster"].targets == {"model": 0}  # nothing left half-done
    with pytest.raises(UsageError, match="--walltime 02:00:00"):
        magic(ip, f"cluster --new --walltime soon --interface lo --work-dir {tmp_path}")
    assert ip.user_ns["cluster"].status.name == "running"  # a typo in --new keeps the old one


@pytest.mark.parametrize(
    "line, says",
    [
        ("scal model 1", "did you mean %scalable scale"),
        ("scale model", "the following arguments are required: N"),
        ("scale model two", "not a number of workers"),
        ("add nosuch 1", "`%scalable container nosuch --cpus 1 --memory 1G` adds one"),
        (
            "scale modle 1",
            "%scalable scale: this cluster has no container 'modle': did you mean model?",
        ),
        ("scale bad-tag 1", "is not valid"),
        ("container model --bind", "expected one argument"),
        ("container model --env NOEQUALS", "KEY=VALUE"),
        (
            "container model --memory lots",
            "--memory lots is not a size between 1 MiB and 1 PiB: write it as Slurm does, e.g. --memory 20G",
        ),
        ("container model --image /no/such.sif", "or pass --image /path/to/model_container.sif"),
        ("container model --image /no/such.sif", "does not exist"),
        ("cluster --local --queue slurm", "--queue is for Slurm clusters"),
        ("status nosuch", "%scalable status: this cluster has no container 'nosuch'"),
        ("logs", "required: TAG"),
        ("scale model 99999999999999999999", "scalable.max-workers-per-tag"),
        ("add model 5000", "scalable.max-workers-per-tag"),
        ("container model --image '/no/such", "No closing quotation"),
        ("container model --memory 0G", "between 1 MiB and 1 PiB"),
        ("container model --bind data,/etc:/stolen", "contains ','"),
    ],
)
def test_mistakes_are_usage_errors_saying_what_to_type(ip, tmp_path, line, says):
    magic(ip, f"cluster --local --work-dir {tmp_path}")
    magic(ip, "container model")
    with pytest.raises(UsageError) as info:
        magic(ip, line)
    assert says in str(info.value)


def test_mistakes_never_show_a_traceback(ip, tmp_path, capsys):
    result = ip.run_cell("%scalable status")  # no cluster yet
    assert isinstance(result.error_in_exec, UsageError)
    err = capsys.readouterr()
    assert "%scalable cluster --local" in err.out + err.err
    assert "Traceback" not in err.out + err.err


def test_help_and_bare_magic(ip, capsys):
    assert magic(ip, "--help") is None
    out = capsys.readouterr().out
    assert "usage: %scalable" in out and "container" in out and "%%scalable TAG" in out
    magic(ip, "scale --help")
    assert "usage: %scalable scale" in capsys.readouterr().out
    magic(ip, "")
    assert "%scalable cluster --local" in capsys.readouterr().out


def test_cell_magic_errors_push_and_reuse(ip, tmp_path, capsys):
    magic(ip, f"cluster --local --work-dir {tmp_path}")
    first = ip.user_ns["cluster"]
    magic(ip, f"cluster --local --work-dir {tmp_path}")
    assert ip.user_ns["cluster"] is first and "Reusing" in capsys.readouterr().out
    magic(ip, "container model")
    with pytest.raises(
        UsageError, match="has no workers to run the cell: type `%scalable add model 1`"
    ):
        ip.run_cell_magic("scalable", "model", "1")
    with pytest.raises(UsageError, match="say|required: TAG"):
        ip.run_cell_magic("scalable", "", "1")
    magic(ip, "add model 1 --wait --timeout 60")
    ip.user_ns["factor"] = 3
    assert ip.run_cell_magic("scalable", "model --push factor", "factor * 14") == 42
    with pytest.raises(UsageError, match="no variable 'nope'"):
        ip.run_cell_magic("scalable", "model --push nope", "1")
    # an error in the cell itself: the remote traceback, cell lines only
    result = ip.run_cell("%%scalable model\nx = 1\n1 / 0\n")
    assert isinstance(result.error_in_exec, RemoteCellError)
    shown = "\n".join(result.error_in_exec._render_traceback_())
    assert "The cell failed on worker model-0" in shown and "1 / 0" in shown
    assert "ZeroDivisionError" in shown and "distributed" not in shown
    # an unpicklable result comes back as its repr
    assert "lock" in repr(
        ip.run_cell_magic("scalable", "model", "import threading\nthreading.Lock()")
    )
    magic(ip, f"cluster --local --new --work-dir {tmp_path} --as c2 --client-as cl2")
    assert first.status.name == "closed" and ip.user_ns["c2"] is not first


def test_adopts_a_cluster_made_in_python(ip, tmp_path):
    from scalable import LocalCluster

    with LocalCluster(work_dir=str(tmp_path)) as mine:
        mine.add_container(tag="py")
        ip.user_ns["mine"] = mine
        assert [r["tag"] for r in magic(ip, "status")] == ["py"]
        assert ip.magics_manager.registry["ScalableMagics"].cluster is mine


def test_proxied_dashboard_links(ip, tmp_path, monkeypatch):
    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX", raising=False)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("JPY_PARENT_PID", "4242")
    assert links.base_url() == "/"
    (tmp_path / "jpserver-4242.json").write_text('{"base_url": "/lab-base/"}')
    assert links.base_url() == "/lab-base/"
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/user/ana/")
    assert links.proxied_link(8787) == "/user/ana/proxy/8787/status"
    with dask.config.set({"distributed.dashboard.link": "{scheme}://{host}:{port}/status"}):
        links.use_proxied_dashboard_links()
        magic(ip, f"cluster --local --work-dir {tmp_path}")
        cluster = ip.user_ns["cluster"]
        assert cluster.dashboard_link == (
            f"/user/ana/proxy/{cluster.dashboard_port}{cluster.dashboard_prefix}/status"
        )
        # the dashboard itself stays on loopback
        sockets = cluster.scheduler.http_server._sockets.values()
        assert {s.getsockname()[0] for s in sockets} == {"127.0.0.1"}


def test_magics_class_is_configurable():
    from traitlets.config import Config

    c = Config()
    c.ScalableMagics.cluster_variable = "hpc"
    m = ScalableMagics(shell=None, config=c)
    assert m.cluster_variable == "hpc" and m.client_variable == "client"


def test_cell_code_needs_no_scalable_on_the_worker():
    """A model's image has distributed but maybe not scalable: the cell runner travels by value."""
    import subprocess
    import sys

    import cloudpickle

    from scalable.jupyter import remote

    cloudpickle.register_pickle_by_value(remote)  # as %%scalable does
    payload = cloudpickle.dumps((remote.run_cell, "x = 6\nprint('six')\nx * 7"))
    code = (
        "import pickle, sys; sys.modules['scalable'] = None; "  # `import scalable` fails here
        "fn, src = pickle.loads(sys.stdin.buffer.read()); out = fn(src); "
        "print(out['result'], repr(out['stdout']), 'scalable' in sys.modules and "
        "sys.modules['scalable'] is not None)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], input=payload, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().split() == ["42", "'six\\n'", "False"]


def test_magic_lines_are_split_like_a_shell(ip, tmp_path, make_image):
    """Quotes group words, as in a shell: an image path and an env value with spaces pass whole."""
    folder = tmp_path / "my models"
    image = make_image("model", folder)
    (tmp_path / "in put").mkdir()
    magic(ip, f"cluster --local --work-dir '{tmp_path}'")
    magic(
        ip, f"container model --image '{image}' --bind \"in put\":/in --env 'GREETING=hello, world'"
    )
    rows = {r["tag"]: r for r in magic(ip, "containers")}
    assert rows["model"]["image"] == image == str(folder / "model_container.sif")
    assert rows["model"]["env"] == {"GREETING": "hello, world"}
    assert rows["model"]["dirs"] == {str(tmp_path / "in put"): "/in"}
