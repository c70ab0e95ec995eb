"""The Scalable kernel: installed kernelspecs started by jupyter_client inside the apptainer stand-in."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from jupyter_client.manager import KernelManager

import scalable.kernel
from scalable.kernel.install import install, kernel_spec, list_kernels

TESTS_BIN = Path(__file__).parent / "bin"


def scalable_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "scalable.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.fixture
def kernel_env(tmp_path, monkeypatch, make_image):
    """A work dir with the scalable image, a private Jupyter prefix and runtime dir, the
    stand-in first on PATH; returns the prefix."""
    work = tmp_path / "work"
    (work / "notebooks").mkdir(parents=True)
    make_image("scalable", work / "containers")
    prefix = tmp_path / "prefix"
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("PATH", f"{TESTS_BIN}:{os.environ['PATH']}")
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "jupyter-runtime"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))  # relay directories land here, countable
    monkeypatch.setenv("SCALABLE_REGISTRY_DIR", str(tmp_path / "registry"))
    monkeypatch.chdir(work / "notebooks")
    return {"work": work, "prefix": prefix, "runtime": runtime, "tmp": tmp_path}


def run_code(kc, code, timeout=180):
    """Execute ``code``; return (stdout text, error name or None)."""
    msg_id = kc.execute(code)
    out, error = [], None
    deadline = time.monotonic() + timeout
    while True:
        msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if kind == "stream" and msg["content"].get("name") == "stdout":  # not warnings
            out.append(msg["content"]["text"])
        elif kind == "error":
            error = msg["content"]["ename"]
            out.append("\n".join(msg["content"]["traceback"]))
        elif kind == "status" and msg["content"]["execution_state"] == "idle":
            return "".join(out), error


@pytest.fixture
def started(kernel_env):
    """Start the installed "scalable" kernel; yield (manager, client, env); always shut down."""
    managers = []

    def start(name="scalable", cwd=None):
        km = KernelManager(kernel_name=name)
        km.start_kernel(cwd=str(cwd or os.getcwd()))
        kc = km.client()
        kc.start_channels()
        kc.wait_for_ready(timeout=240)
        managers.append((km, kc))
        return km, kc

    yield start
    for km, kc in managers:
        kc.stop_channels()
        if km.has_kernel:
            km.shutdown_kernel(now=True)


def relay_dirs(env) -> list[str]:
    return sorted(p.name for p in env["runtime"].iterdir() if p.name.startswith("scalable-kernel-"))


def launcher_pids(connection_file, watchdogs=False) -> list[int]:
    """Launchers (each serving one relay) of this kernel, or their watchdogs."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except OSError:
            continue
        launcher = any(c.endswith(b"scalable/kernel/launcher.py") for c in cmd)
        if launcher and connection_file.encode() in cmd and state != "Z":
            if (comm == "scalable-watch") == watchdogs:
                pids.append(int(pid))
    return pids


def wait_until(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout}s"
        time.sleep(0.1)


# --- install / list / remove ---------------------------------------------------------------


def test_install_writes_a_launcher_kernelspec_with_logos(kernel_env):
    prefix, work = kernel_env["prefix"], kernel_env["work"]
    data = work / "data"
    data.mkdir()
    r = scalable_cli(
        "kernel",
        "install",
        "--prefix",
        str(prefix),
        "--image",
        str(work / "containers" / "scalable_container.sif"),
        "--bind",
        f"{data}:/data",
        "--env",
        "OMP_NUM_THREADS=2",
    )
    assert r.returncode == 0, r.stderr
    folder = prefix / "share" / "jupyter" / "kernels" / "scalable"
    spec = json.loads((folder / "kernel.json").read_text())
    assert spec["argv"][:2] == [
        sys.executable,
        str(Path(scalable.kernel.__file__).with_name("launcher.py")),
    ]
    assert spec["argv"][-2:] == ["-f", "{connection_file}"]
    argv = spec["argv"]
    assert argv[argv.index("--work-dir") + 1] == str(work)  # the folder holding containers/
    assert argv[argv.index("--bind") + 1] == f"{data}:/data"
    assert argv[argv.index("--env") + 1] == "OMP_NUM_THREADS=2"
    assert spec["display_name"] == "Scalable" and spec["interrupt_mode"] == "signal"
    assert {"logo-32x32.png", "logo-64x64.png", "logo-svg.svg"} <= {
        p.name for p in folder.iterdir()
    }
    assert (folder / "logo-64x64.png").read_bytes()[:4] == b"\x89PNG"
    assert [k["name"] for k in list_kernels(str(prefix))] == ["scalable"]
    assert "scalable" in scalable_cli("kernel", "list", "--prefix", str(prefix)).stdout
    r = scalable_cli("kernel", "remove", "scalable", "--prefix", str(prefix))
    assert r.returncode == 0 and not folder.exists()
    r = scalable_cli("kernel", "remove", "scalable", "--prefix", str(prefix))
    assert r.returncode == 1 and "no Scalable kernel named 'scalable'" in r.stderr


def test_tag_kernel_uses_the_tag_image_and_config(kernel_env, make_image):
    import dask

    work = kernel_env["work"]
    gcam = make_image("gcam", work / "containers")
    (work / "gcam-core").mkdir()
    preset = {"gcam": {"dirs": {str(work / "gcam-core"): "/gcam-core"}, "env": {"GCAM": "1"}}}
    with dask.config.set({"scalable.containers": preset}):
        path = install(tag="gcam", work_dir=str(work), prefix=str(kernel_env["prefix"]))
    spec = json.loads((Path(path) / "kernel.json").read_text())
    assert Path(path).name == "scalable-gcam" and spec["display_name"] == "Scalable (gcam)"
    argv = spec["argv"]
    assert argv[argv.index("--image") + 1] == gcam
    assert f"{work / 'gcam-core'}:/gcam-core" in argv and "GCAM=1" in argv
    assert argv[argv.index("--tag") + 1] == "gcam"


@pytest.mark.parametrize(
    "option, words",
    [
        (["--env", "NOT A VAR"], "must look like NAME=value"),
        (["--bind", "/no/such/dir:/x"], "does not exist on this machine"),
        (["--name", "Bad Name!"], "may hold only letters"),
        (["--tag", "bad-tag"], "is not valid"),
    ],
)
def test_install_mistakes_are_one_sentence(kernel_env, option, words):
    r = scalable_cli("kernel", "install", "--prefix", str(kernel_env["prefix"]), *option)
    assert r.returncode == 1 and words in r.stderr and "Traceback" not in r.stderr


def test_missing_image_warns_at_install():
    with pytest.warns(UserWarning, match="does not exist yet"):
        kernel_spec(image="/no/such/image.sif")


# --- the running kernel --------------------------------------------------------------------


@pytest.mark.root
def test_kernel_runs_in_the_image_with_relay_shims_and_binds(kernel_env, started):
    work, tmp = kernel_env["work"], kernel_env["tmp"]
    data = tmp / "data"
    data.mkdir()
    (data / "hello.txt").write_text("hi")
    install(
        work_dir=str(work),
        binds=[f"{data}:/data"],
        env=["MY_SETTING=42"],
        prefix=str(kernel_env["prefix"]),
    )
    km, kc = started()
    out, err = run_code(
        kc,
        "import os, shutil, json; print(json.dumps({"
        "'image': os.environ.get('APPTAINER_NAME'), "
        "'relay': os.environ.get('SCALABLE_RELAY'), "
        "'registry': os.environ.get('SCALABLE_REGISTRY_DIR'), "
        "'work': os.environ.get('DASK_SCALABLE__WORK_DIRECTORY'), "
        "'squeue': shutil.which('squeue'), 'cwd': os.getcwd(), "
        "'data': open('/data/hello.txt').read(), 'setting': os.environ.get('MY_SETTING'), "
        "'relay_ok': os.path.exists(os.environ['SCALABLE_RELAY'])}))",
    )
    assert err is None, out
    got = json.loads(out)
    (relay_dir,) = relay_dirs(kernel_env)
    assert got["image"] == "scalable_container.sif"
    assert got["relay"] == str(kernel_env["runtime"] / relay_dir / "relay.sock") and got["relay_ok"]
    assert got["squeue"] == str(kernel_env["runtime"] / relay_dir / "bin" / "squeue")
    assert got["registry"] == str(tmp / "registry") and got["work"] == str(work)
    assert got["cwd"] == str(work / "notebooks")
    assert (got["data"], got["setting"]) == ("hi", "42")
    out, err = run_code(
        kc, "import dask, scalable; print(dask.config.get('scalable.work-directory'))"
    )
    assert out.strip() == str(work)
    # The relay answers, refusing what is not allowlisted.
    out, _ = run_code(
        kc,
        "import subprocess; r = subprocess.run(['squeue'], capture_output=True, text=True, "
        "env={**os.environ, 'SLURM_CONF': '/no/such.conf'}); print(r.returncode)",
    )
    assert out.strip() != "127"


@pytest.mark.root
def test_interrupt_stops_a_sleep_loop(kernel_env, started):
    install(work_dir=str(kernel_env["work"]), prefix=str(kernel_env["prefix"]))
    km, kc = started()
    msg_id = kc.execute(
        "import time\nprint('looping', flush=True)\nwhile True:\n    time.sleep(0.05)"
    )
    # interrupt only once the loop runs: a kernel between requests ignores SIGINT
    deadline = time.monotonic() + 180
    while True:
        msg = kc.get_iopub_msg(timeout=max(1, deadline - time.monotonic()))
        if (
            msg["parent_header"].get("msg_id") == msg_id
            and msg["msg_type"] == "stream"
            and "looping" in msg["content"]["text"]
        ):
            break
    km.interrupt_kernel()
    while True:
        reply = kc.get_shell_msg(timeout=180)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    assert (
        reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
    )
    assert run_code(kc, "print(1 + 1)")[0].strip() == "2"  # the kernel lives on


@pytest.mark.root
def test_restart_leaves_one_relay_and_shutdown_leaves_none(kernel_env, started):
    install(work_dir=str(kernel_env["work"]), prefix=str(kernel_env["prefix"]))
    km, kc = started()
    conn = km.connection_file
    first = relay_dirs(kernel_env)
    assert len(first) == 1 and len(launcher_pids(conn)) == 1 and len(launcher_pids(conn, True)) == 1
    km.restart_kernel(now=False)
    kc.wait_for_ready(timeout=240)
    assert run_code(kc, "print('back')")[0].strip() == "back"
    wait_until(
        lambda: len(relay_dirs(kernel_env)) == 1 and relay_dirs(kernel_env) != first,
        what="exactly one new relay",
    )
    assert len(launcher_pids(conn)) == 1
    wait_until(lambda: len(launcher_pids(conn, True)) == 1, what="one watchdog")
    km.shutdown_kernel()
    wait_until(
        lambda: (
            not relay_dirs(kernel_env) and not launcher_pids(conn) and not launcher_pids(conn, True)
        ),
        what="no relay left",
    )


@pytest.mark.root
def test_kill_9_of_the_launcher_ends_relay_and_kernel(kernel_env, started):
    install(work_dir=str(kernel_env["work"]), prefix=str(kernel_env["prefix"]))
    km, kc = started()
    out, _ = run_code(kc, "import os; print(os.getpid())")
    kernel_pid = int(out)
    (launcher,) = launcher_pids(km.connection_file)
    os.kill(launcher, signal.SIGKILL)
    wait_until(lambda: not relay_dirs(kernel_env), what="relay directory removed")

    def gone(pid):
        try:
            return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
        except OSError:
            return True

    wait_until(lambda: gone(kernel_pid), what="kernel process ended")
    wait_until(lambda: not launcher_pids(km.connection_file, True), what="watchdog ended")


SERVER = """
import sys, time
from jupyter_client.manager import KernelManager
km = KernelManager(kernel_name="scalable")
km.start_kernel()
kc = km.client()
kc.start_channels()
kc.wait_for_ready(timeout=240)
print(km.connection_file, flush=True)
time.sleep(600)
"""


@pytest.mark.root
def test_kernel_and_relay_end_when_the_jupyter_server_dies(kernel_env):
    install(work_dir=str(kernel_env["work"]), prefix=str(kernel_env["prefix"]))
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        conn = server.stdout.readline().strip()
        assert conn and launcher_pids(conn) and relay_dirs(kernel_env)
    finally:
        server.kill()  # like a Jupyter server killed outright: its kernels must not linger
        server.wait()
    wait_until(
        lambda: (
            not launcher_pids(conn) and not launcher_pids(conn, True) and not relay_dirs(kernel_env)
        ),
        what="launcher, watchdog and relay gone",
    )


@pytest.mark.parametrize("problem", ["image", "runtime"])
def test_missing_image_or_runtime_fails_with_one_line(kernel_env, monkeypatch, problem):
    image = kernel_env["work"] / "containers" / "scalable_container.sif"
    install(work_dir=str(kernel_env["work"]), prefix=str(kernel_env["prefix"]))
    if problem == "image":
        image.unlink()
    else:
        monkeypatch.setenv("PATH", "/usr/bin:/bin")
    km = KernelManager(kernel_name="scalable")
    km.start_kernel(stderr=subprocess.PIPE)
    proc = km.provisioner.process
    assert proc.wait(30) == 1
    lines = proc.stderr.read().decode().strip().splitlines()
    assert len(lines) == 1, lines
    expected = (
        f"image {image} does not exist" if problem == "image" else "'apptainer' is not on PATH"
    )
    assert lines[0].startswith("scalable kernel: ") and expected in lines[0]
    km.cleanup_resources()
    assert not relay_dirs(kernel_env)


def test_launcher_spells_exec_as_the_runtime_does(kernel_env, tmp_path):
    from scalable.kernel.launcher import parser, plan
    from scalable.runtimes import ContainerRuntime

    image = str(kernel_env["work"] / "containers" / "scalable_container.sif")
    conn = tmp_path / "jupyter-runtime" / "kernel-x.json"
    args = parser().parse_args(
        [
            "--image",
            image,
            "--work-dir",
            str(kernel_env["work"]),
            "--exec-arg=--nv",
            "--env",
            "A=1",
            "-f",
            str(conn),
        ]
    )
    relay_dir = str(tmp_path / "relay-x")
    argv, facts = plan(args, relay_dir)
    assert argv[-5:] == ["python", "-c", argv[-3], "-f", str(conn)]
    expected = ContainerRuntime(str(TESTS_BIN / "apptainer"), exec_args=["--nv"]).exec_argv(
        image, argv[-5:], binds=facts["binds"], env=facts["env"], cwd=os.getcwd()
    )
    assert argv == expected
    assert facts["binds"] == {
        str(kernel_env["work"]): str(kernel_env["work"]),
        str(conn.parent): str(conn.parent),
        str(tmp_path / "registry"): str(tmp_path / "registry"),
        relay_dir: relay_dir,
    }
    assert facts["env"] == {
        "SCALABLE_RELAY": f"{relay_dir}/relay.sock",
        "SCALABLE_REGISTRY_DIR": str(tmp_path / "registry"),
        "DASK_SCALABLE__WORK_DIRECTORY": str(kernel_env["work"]),
        "A": "1",
    }
