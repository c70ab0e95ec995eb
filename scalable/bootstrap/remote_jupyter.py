"""Start (or find) the user's JupyterLab on the HPC login host; print its record as JSON.

Runs on the host, sent by ``scalable bootstrap`` to the host environment's Python on stdin
(``python - start <work_dir> [--port N]``), so it uses the standard library only and works
before or without anything else of scalable's on that side. JupyterLab listens on 127.0.0.1
only; the token travels in the environment (``JUPYTER_TOKEN``), never on a command line other
users can read with ``ps``. The record, ``<work_dir>/.scalable/jupyter.json`` (mode 600), holds
pid, port and token, so the next run reuses a server that still answers.

Examples
--------
``python - start /scratch/me/work < remote_jupyter.py`` prints
``{"pid": 4242, "port": 8888, "token": "...", "reused": false}``.
"""

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request


def _record_path(work_dir):
    return os.path.join(work_dir, ".scalable", "jupyter.json")


def _answers(port, token, timeout=3.0):
    url = "http://127.0.0.1:%d/api/status" % port
    req = urllib.request.Request(url, headers={"Authorization": "token " + token})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read(work_dir):
    try:
        with open(_record_path(work_dir)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def status(work_dir):
    rec = _read(work_dir)
    if rec and _alive(rec["pid"]) and _answers(rec["port"], rec["token"]):
        return rec
    return None


def start(work_dir, port=0, timeout=180.0):
    rec = status(work_dir)
    if rec:
        rec["reused"] = True
        return rec
    port = port or _free_port()
    token = secrets.token_hex(24)
    prefix = os.path.join(work_dir, ".scalable", "jupyter")
    env = dict(os.environ, JUPYTER_TOKEN=token)
    # The Scalable kernelspec was installed under this prefix; JUPYTER_PATH makes it visible.
    env["JUPYTER_PATH"] = os.pathsep.join(
        p
        for p in [os.path.join(prefix, "share", "jupyter"), os.environ.get("JUPYTER_PATH", "")]
        if p
    )
    log_path = os.path.join(work_dir, "logs", "jupyterlab.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    argv = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ip=127.0.0.1",
        "--port=%d" % port,
        "--port-retries=0",
        "--ServerApp.root_dir=" + work_dir,
        "--LabApp.news_url=None",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        argv.append("--allow-root")  # containers and test hosts log in as root
    with open(log_path, "ab") as log:
        # A new session: the server outlives this ssh command and the user's disconnects.
        proc = subprocess.Popen(
            argv,
            cwd=work_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(log_path, errors="replace") as f:
                tail = "".join(f.readlines()[-15:])
            sys.stderr.write(
                "JupyterLab exited with code %d; end of %s:\n%s" % (proc.returncode, log_path, tail)
            )
            sys.exit(1)
        if _answers(port, token, timeout=2.0):
            break
        time.sleep(0.2)
    else:
        proc.terminate()
        sys.stderr.write("JupyterLab did not answer within %d s; see %s\n" % (timeout, log_path))
        sys.exit(1)
    rec = {"pid": proc.pid, "port": port, "token": token, "log": log_path, "started": time.time()}
    path = _record_path(work_dir)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(rec, f)
    os.replace(path + ".tmp", path)
    rec["reused"] = False
    return rec


def stop(work_dir):
    rec = _read(work_dir)
    if rec and _alive(rec["pid"]):
        os.killpg(rec["pid"], signal.SIGTERM)
        for _ in range(100):
            if not _alive(rec["pid"]):
                break
            time.sleep(0.1)
    try:
        os.remove(_record_path(work_dir))
    except OSError:
        pass
    return rec or {}


def main(argv=None):
    p = argparse.ArgumentParser(prog="remote_jupyter")
    p.add_argument("action", choices=["start", "status", "stop"])
    p.add_argument("work_dir")
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args(argv)
    if a.action == "start":
        out = start(a.work_dir, a.port)
    elif a.action == "status":
        out = status(a.work_dir) or {}
    else:
        out = stop(a.work_dir)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
