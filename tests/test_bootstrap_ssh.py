"""``scalable bootstrap`` end to end against a real OpenSSH sshd on loopback (the HPC login host).

rsync, the remote set-up, the kernelspec install, JupyterLab and the ``ssh -L`` forward all run
for real; docker and apptainer are recording stand-ins (see ``bootstrap_harness.py``).
Authentications are counted in sshd's log: one per bootstrap run, thanks to ControlMaster.
"""

from __future__ import annotations

import json
import socket
import sys
import urllib.request
from pathlib import Path

import pytest

from bootstrap_harness import (  # noqa: F401
    HERE,
    Running,
    bootstrap_args,
    execute,
    get_json,
    host,
    laptop,
    needs_sshd,
    run_bootstrap,
)
from waiting import wait_for

pytestmark = [pytest.mark.ssh, needs_sshd]


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_bootstrap_end_to_end_then_reconnect(host, laptop):
    run1 = Running(
        laptop, bootstrap_args(host, "--module-load", f"export PATH={HERE / 'fake_docker'}:$PATH")
    )
    try:
        assert host.logins() == 1, "the whole bootstrap must authenticate once (ControlMaster)"
        base, token = run1.url.split("/lab?token=")
        # JupyterLab answers through the forward, with the Scalable kernelspec listed.
        with urllib.request.urlopen(run1.url, timeout=30) as r:
            assert r.status == 200 and b"JupyterLab" in r.read()
        if socket.has_ipv6 and has_ipv6_loopback():
            # "localhost" may mean ::1 first (macOS): the forward listens on both loopbacks.
            get_json(base.replace("localhost", "[::1]") + f"/api/status?token={token}")
        specs = get_json(f"{base}/api/kernelspecs?token={token}")["kernelspecs"]
    finally:
        assert run1.stop() == 0, run1.text
    # JupyterLab (and so its kernels) runs with the site's module line applied.
    pid = json.loads((host.work_dir / ".scalable" / "jupyter.json").read_text())["pid"]
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    path = next(v for v in environ if v.startswith(b"PATH=")).decode()
    assert str(HERE / "fake_docker") in path
    # The token is not on a command line other users could read with ps.
    assert token not in Path(f"/proc/{pid}/cmdline").read_text()
    # Images were copied into the layout on the "host".
    sifs = sorted(p.name for p in (host.work_dir / "containers").iterdir())
    assert sifs == ["scalable_container.sif", "stitches_container.sif"]
    assert (host.work_dir / "logs").is_dir()
    calls = [json.loads(line) for line in open(laptop["FAKE_DOCKER_LOG"])]
    builds = [c[c.index("--target") + 1] for c in calls if c[1] == "build"]
    assert builds == ["scalable", "stitches", "apptainer"]
    # The settings were remembered in the user's config dir, not in /tmp or the cwd.
    saved = json.loads(Path(laptop["XDG_CONFIG_HOME"], "scalable", "bootstrap.json").read_text())
    assert saved["host"] == "hpc-test" and saved["targets"] == ["stitches"]

    # A second plain run: every set-up step is done already; JupyterLab is reused.
    run2 = Running(laptop, [sys.executable, "-m", "scalable.cli", "bootstrap", "--no-input"])
    try:
        assert "reused" in run2.text and run2.url.split("token=")[1] == token
        assert run2.text.count("done already") == 7, run2.text
        get_json(run2.url.replace("/lab?", "/api/status?"))
    finally:
        run2.stop()
    assert host.logins() == 2
    assert len([json.loads(line) for line in open(laptop["FAKE_DOCKER_LOG"])]) == len(calls), (
        "nothing rebuilt"
    )

    # --connect only reconnects.
    run3 = Running(
        laptop, [sys.executable, "-m", "scalable.cli", "bootstrap", "--no-input", "--connect"]
    )
    try:
        assert "[1/9]" not in run3.text and "reused" in run3.text
        get_json(run3.url.replace("/lab?", "/api/status?"))
    finally:
        run3.stop()
    assert host.logins() == 3

    # --stop ends the JupyterLab bootstrap started there.
    pid = json.loads((host.work_dir / ".scalable" / "jupyter.json").read_text())["pid"]
    r = run_bootstrap(laptop, [sys.executable, "-m", "scalable.cli", "bootstrap", "--stop"])
    assert r.returncode == 0 and f"stopped JupyterLab pid {pid}" in r.stdout, r.stdout + r.stderr

    def gone():  # exited (a zombie not yet reaped by its parent counts as exited)
        try:
            return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"
        except (FileNotFoundError, ProcessLookupError):
            return True

    wait_for(gone, 60, f"JupyterLab pid {pid} to exit")
    print(
        f"\nbootstrap first run {run1.elapsed:.1f} s, re-run {run2.elapsed:.1f} s, "
        f"connect {run3.elapsed:.1f} s"
    )
    assert "scalable" in specs, f"kernelspecs: {sorted(specs)}\n{run1.text}"
    spec = specs["scalable"]["spec"]
    assert spec["display_name"] == "Scalable"
    assert str(host.work_dir / "containers" / "scalable_container.sif") in spec["argv"]
    assert (
        host.work_dir / ".scalable" / "jupyter" / "share" / "jupyter" / "kernels" / "scalable"
    ).is_dir()


def test_connect_before_any_set_up_says_what_to_run(host, laptop):
    args = bootstrap_args(host, "--connect")
    i = args.index("--remote-python")
    del args[i : i + 2]
    r = run_bootstrap(laptop, args)
    assert r.returncode == 1
    assert "does not exist on hpc-test: run `scalable bootstrap` without --connect" in r.stderr, (
        r.stderr
    )
    assert host.logins() == 1


def test_scalable_kernel_runs_in_the_copied_image_through_the_forward(host, laptop):
    import asyncio

    # The site's module line puts the apptainer stand-in (tests/bin) on the host's PATH.
    run = Running(
        laptop, bootstrap_args(host, "--module-load", f"export PATH={HERE / 'bin'}:$PATH")
    )
    try:
        base, token = run.url.split("/lab?token=")
        req = urllib.request.Request(
            f"{base}/api/kernels?token={token}",
            method="POST",
            data=json.dumps({"name": "scalable"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=120) as r:
            kernel = json.loads(r.read())
        out = asyncio.run(
            execute(
                base, token, kernel["id"], "import os; print(os.environ.get('APPTAINER_CONTAINER'))"
            )
        )
        assert out.strip() == str(host.work_dir / "containers" / "scalable_container.sif"), out
        urllib.request.urlopen(
            urllib.request.Request(
                f"{base}/api/kernels/{kernel['id']}?token={token}", method="DELETE"
            ),
            timeout=60,
        )
    finally:
        run.stop()
