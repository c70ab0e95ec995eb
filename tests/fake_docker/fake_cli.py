"""Recording stand-in for the docker and apptainer CLIs (tests only: no Docker engine runs here).

``docker`` and ``apptainer`` beside this file run it. Every call appends its argv as one JSON
line to ``$FAKE_DOCKER_LOG``; images "built" are remembered in ``$FAKE_DOCKER_STATE`` (a JSON
file) with an id derived from the Dockerfile's text and the target, so a rebuild of an unchanged
Dockerfile gives the same id, as Docker's cache does. Conversions write a small file at the SIF
path the real tools would write. A ``--target`` the Dockerfile has no ``AS`` line for fails, as
``docker build`` does; the check is a plain regex, independent of scalable's parser.
"""

import hashlib
import json
import os
import re
import sys
import time


def _state():
    try:
        with open(os.environ["FAKE_DOCKER_STATE"]) as f:
            return json.load(f)
    except (KeyError, OSError, ValueError):
        return {}


def _save(state):
    with open(os.environ["FAKE_DOCKER_STATE"], "w") as f:
        json.dump(state, f)


def _opt(argv, *names):
    for i, a in enumerate(argv):
        for n in names:
            if a == n and i + 1 < len(argv):
                return argv[i + 1]
            if a.startswith(n + "="):
                return a.split("=", 1)[1]
    return None


def _write_sif(path, source):
    state = _state()
    ref = source.split("://", 1)[-1]
    if ref not in state.get("images", {}):
        sys.stderr.write("FATAL: no image %s in the docker daemon\n" % ref)
        sys.exit(255)
    with open(path, "w") as f:
        f.write("fake SIF of %s %s\n" % (ref, state["images"][ref]))


def docker(argv):
    cmd = argv[0] if argv else ""
    state = _state()
    if cmd == "build":
        dockerfile, target, tag = (
            _opt(argv, "--file", "-f"),
            _opt(argv, "--target"),
            _opt(argv, "--tag", "-t"),
        )
        text = open(dockerfile).read()
        if not re.search(r"(?im)^\s*FROM\s+.*\s+AS\s+%s\s*$" % re.escape(target), text):
            sys.stderr.write(
                'ERROR: failed to solve: target stage "%s" could not be found\n' % target
            )
            return 1
        digest = "sha256:" + hashlib.sha256((text + target).encode()).hexdigest()
        print("#1 [%s] building (fake docker)" % target)
        delay = float(os.environ.get("FAKE_DOCKER_DELAY", "0"))
        time.sleep(delay)
        state.setdefault("images", {})[tag] = digest
        _save(state)
        print("#2 naming to docker.io/library/%s done" % tag)
        return 0
    if cmd == "image" and argv[1:2] == ["inspect"]:
        ref = argv[-1]
        if ref not in state.get("images", {}):
            sys.stderr.write("Error: No such image: %s\n" % ref)
            return 1
        print(state["images"][ref])
        return 0
    if cmd == "run":
        mounts = {}
        rest = argv[1:]
        while rest and rest[0].startswith("-"):
            flag = rest.pop(0)
            if flag in ("--volume", "-v"):
                src, dst = rest.pop(0).split(":", 1)
                mounts[dst] = src
            elif flag in ("--rm", "--privileged"):
                pass
            else:
                rest.pop(0)
        image, command = rest[0], rest[1:]
        if image not in state.get("images", {}):
            sys.stderr.write("Unable to find image '%s' locally\n" % image)
            return 125
        if command[:1] == ["build"]:
            out = [a for a in command[1:] if not a.startswith("-")]
            dst, source = out[0], out[1]
            for inside, outside in mounts.items():
                if dst.startswith(inside + "/"):
                    dst = outside + dst[len(inside) :]
            _write_sif(dst, source)
            print("INFO:    Build complete: %s" % out[0])
            return 0
        return 0
    if cmd in ("version", "info"):
        print("fake docker 0.0")
        return 0
    sys.stderr.write("fake docker: unsupported command %r\n" % argv)
    return 2


def apptainer(argv):
    if argv[:1] == ["build"]:
        out = [a for a in argv[1:] if not a.startswith("-")]
        _write_sif(out[0], out[1])
        return 0
    if argv[:1] == ["--version"] or argv[:1] == ["version"]:
        print("apptainer version 0.0-fake")
        return 0
    sys.stderr.write("fake apptainer: unsupported command %r\n" % argv)
    return 2


def main():
    name = os.path.basename(sys.argv[0])
    log = os.environ.get("FAKE_DOCKER_LOG")
    if log:
        with open(log, "a") as f:
            f.write(json.dumps([name] + sys.argv[1:]) + "\n")
    sys.exit({"docker": docker, "apptainer": apptainer}[name](sys.argv[1:]))


if __name__ == "__main__":
    main()
