"""Slurm command shims: ``sbatch``, ``squeue``... executables that forward to the relay.

Inside the scalable image Slurm's commands do not exist. :func:`write_shims` puts one small
Python script and a symlink per allowlisted name into a directory; placed first on the
container's ``PATH``, ``!squeue`` in a notebook and any library that calls Slurm (dask-jobqueue
included) run the host's command through the relay, with argv, stdin, working directory, stdout,
stderr and exit code carried over.

The shim uses the standard library only (it is copied next to a copy of
:mod:`scalable.relay.protocol`), so it starts in milliseconds and does not depend on the scalable
version installed in the image.

Examples
--------
>>> write_shims("/tmp/shims")                      # doctest: +SKIP
['sbatch', 'squeue', 'scancel', 'sinfo', 'scontrol', 'sacct']
"""

from __future__ import annotations

import os
import shutil
import sys

try:
    from . import protocol
except ImportError:  # running as a copied shim script, outside the package
    import scalable_relay_protocol as protocol  # type: ignore[no-redef]

SHIM_NAMES = ("sbatch", "squeue", "scancel", "sinfo", "scontrol", "sacct")
SCRIPT = "scalable-relay-shim"
# sbatch options that take no value, so the token after them may be the script
_SBATCH_FLAGS = {
    "-H",
    "--hold",
    "--parsable",
    "-W",
    "--wait",
    "--test-only",
    "--requeue",
    "--no-requeue",
    "--exclusive",
    "--contiguous",
    "-O",
    "--overcommit",
    "--spread-job",
    "--use-min-nodes",
    "-Q",
    "--quiet",
    "-v",
    "--verbose",
    "--ignore-pbs",
    "-k",
    "--no-kill",
    "-s",
    "--oversubscribe",
    "--get-user-env",
    "--reboot",
    "-h",
    "--help",
    "-V",
    "--version",
    "--usage",
}
_SHORT_FLAGS = set("HWOQvkshV")


def _sbatch_script(argv):
    """Index of sbatch's script argument, or None; also whether sbatch reads no script at all."""
    i = 1
    while i < len(argv):
        a = argv[i]
        if a == "--":
            i += 1
            break
        if a.startswith("-") and a != "-":
            if a == "--wrap" or a.startswith("--wrap="):
                return None, True
            if (
                a in _SBATCH_FLAGS
                or "=" in a
                or (not a.startswith("--") and len(a) > 2 and set(a[1:]) <= _SHORT_FLAGS)
            ):
                i += 1
            elif not a.startswith("--") and len(a) > 2:
                i += 1  # short option with its value attached: -pdebug
            else:
                i += 2  # option followed by its value
            continue
        break
    if i < len(argv):
        return i, False
    info_only = any(a in ("-h", "--help", "-V", "--version", "--usage") for a in argv[1:])
    return None, info_only


def sbatch_stdin(argv):
    """Move a local sbatch script into stdin, since the host may not see the file.

    Returns ``(argv, stdin)``: the script argument removed and its bytes, when argv names a
    script file that exists here and has no script arguments after it; else argv unchanged and
    ``b""``.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile("w", suffix=".sh") as f:
    ...     _ = f.write("#!/bin/bash\\nhostname\\n"); f.flush()
    ...     sbatch_stdin(["sbatch", "-p", "debug", "--parsable", f.name])
    (['sbatch', '-p', 'debug', '--parsable'], b'#!/bin/bash\\nhostname\\n')
    """
    argv = list(argv)
    i, _ = _sbatch_script(argv)
    if i is None or i != len(argv) - 1 or not os.path.isfile(argv[i]):
        return argv, b""
    with open(argv[i], "rb") as f:
        script = f.read()
    return argv[:i] + argv[i + 1 :], script


def is_shim(path: str | None) -> bool:
    """Is ``path`` (e.g. ``shutil.which("squeue")``) one of these shims? Callers that can talk
    to the relay directly (:func:`scalable.relay.client.relay_run`, ~1 ms) may skip starting the
    shim (a Python process, ~50 ms).

    Examples
    --------
    >>> is_shim("/usr/bin/squeue")
    False
    """
    return bool(path) and os.path.basename(os.path.realpath(path)) == SCRIPT


def main() -> int:
    """Entry point of every shim: its own name is the command to run on the host."""
    return forward([os.path.basename(sys.argv[0]), *sys.argv[1:]])


def forward(argv) -> int:
    """Run ``argv`` through the relay, mirror its stdout, stderr; return its exit code."""
    argv = list(argv)
    name = argv[0]
    path = os.environ.get("SCALABLE_RELAY")
    if not path:
        sys.stderr.write(
            f"{name}: Slurm is not installed here and SCALABLE_RELAY is not set; start "
            f"this kernel with the Scalable launcher or run on the host\n"
        )
        return 127
    stdin = b""
    if name == "sbatch":
        argv, stdin = sbatch_stdin(argv)
        index, no_script = _sbatch_script(argv)
        if not stdin and index is None and not no_script and not sys.stdin.isatty():
            stdin = sys.stdin.buffer.read()  # sbatch reads its script from stdin
    try:
        header, out, err = protocol.call(path, argv, stdin=stdin)
    except OSError as e:
        sys.stderr.write(
            f"{name}: cannot reach the host relay at {path} ({e.strerror or e}); restart "
            f"the kernel to start a new relay\n"
        )
        return 127
    except (protocol.ForeignRelay, protocol.NoReply) as e:
        sys.stderr.write(f"{name}: {e}\n")
        return 126
    except protocol.ProtocolError as e:
        sys.stderr.write(f"{name}: the host relay answered badly: {e}\n")
        return 126
    if header.get("error"):
        sys.stderr.write(f"{name}: refused by the host relay: {header['error']}\n")
        return int(header.get("returncode") or 126)
    sys.stdout.buffer.write(out)
    sys.stdout.flush()
    sys.stderr.buffer.write(err)
    sys.stderr.flush()
    rc = int(header["returncode"])
    return 128 - rc if rc < 0 else rc


def write_shims(
    directory: str, names=SHIM_NAMES, python: str = "/usr/bin/env python3"
) -> list[str]:
    """Write the shim script and one symlink per name into ``directory``.

    Parameters
    ----------
    directory : str
        Created if missing; put it first on the container's ``PATH``.
    names : list of str
        Commands to shim (default: the relay's default allowlist).
    python : str
        Interpreter line for the script, as seen *inside* the image.
    """
    os.makedirs(directory, exist_ok=True)
    here = os.path.dirname(os.path.abspath(__file__))
    shutil.copyfile(
        os.path.join(here, "protocol.py"), os.path.join(directory, "scalable_relay_protocol.py")
    )
    script = os.path.join(directory, SCRIPT)
    with open(os.path.join(here, "shim.py")) as f:
        body = f.read()
    tmp = script + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"#!{python}\n{body}\n\nif __name__ == '__main__':\n    sys.exit(main())\n")
    os.chmod(tmp, 0o755)
    os.replace(tmp, script)
    for name in names:
        link = os.path.join(directory, name)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink(SCRIPT, link)
    return list(names)
