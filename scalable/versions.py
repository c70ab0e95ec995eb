"""Images built elsewhere: the worker's versions are checked inside its image before it starts.

A worker whose image lacks ``distributed``, or runs another ``distributed``, ``cloudpickle``,
``msgpack`` or Python than the scheduler, either never connects or fails later with a
deserialization traceback. So the worker command is ``python -c CHECK -m
distributed.cli.dask_worker ...``: :data:`CHECK` (plain Python, no scalable needed in the
image) compares the image's versions with the scheduler's and, when they differ, writes one
marked line to the job log and exits; otherwise it runs the worker in the same process.
:func:`refusal` turns that line into the tag's error: one sentence naming both versions and
the fix.
"""

from __future__ import annotations

import json
import re
import sys
from importlib.metadata import PackageNotFoundError, version

from . import config

PACKAGES = ("distributed", "cloudpickle", "msgpack")
MARKER = "scalable-image-versions:"
#: exit status of a worker refused by the check (EX_CONFIG)
EXIT_MISMATCH = 78

# Runs inside the image, under whatever Python it has: no f-strings, no scalable imports.
_CHECK = """import sys, json
want = dict(%s)
def v(name):
    try:
        import importlib.util
        if importlib.util.find_spec(name) is None:
            return None
        from importlib.metadata import version
        return version(name)
    except Exception:
        try:
            return __import__(name).__version__
        except Exception:
            return None
have = {"python": "%%d.%%d" %% tuple(sys.version_info[:2])}
for name in want:
    if name != "python":
        have[name] = v(name)
if have != want:
    sys.stderr.write("%s " + json.dumps(have) + "\\n")
    sys.stderr.flush()
    sys.exit(%d)
import runpy
sys.argv = sys.argv[2:]
runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
"""


def scheduler_versions() -> dict:
    """The versions a worker must match: this process's (the scheduler runs here)."""
    want = {"python": "{}.{}".format(*sys.version_info[:2])}
    for name in PACKAGES:
        try:
            want[name] = version(name)
        except PackageNotFoundError:  # pragma: no cover - dask needs them all
            want[name] = None
    return want


def worker_python(python: str) -> list:
    """``[python, "-c", CHECK]``: put before ``-m distributed.cli.dask_worker ...``.

    Just ``[python]`` when ``scalable.container.check-versions`` is false.
    """
    if not config.get("container.check-versions", True):
        return [python]
    want = ", ".join(f"{k}={str(v)!r}".replace("'", '"') for k, v in scheduler_versions().items())
    check = _CHECK % (want, MARKER, EXIT_MISMATCH)
    # one line, so the worker command stays the job script's last line; no single quotes,
    # so the shell quoting around it stays plain
    escaped = check.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return [python, "-c", f'exec("{escaped}")']


def refusal(log_text: str, tag: str, image: str | None) -> str | None:
    """The sentence for a worker the check refused (its log holds the marked line), else None.

    Examples
    --------
    >>> want = scheduler_versions()
    >>> line = MARKER + ' {"python": "%s", "distributed": null}' % want["python"]
    >>> refusal(line, "gcam", "/w/gcam.sif").split(":")[0]
    "tag 'gcam' cannot start workers"
    """
    found = re.findall(re.escape(MARKER) + r" (\{.*\})", log_text or "")
    if not found:
        return None
    try:
        have = json.loads(found[-1])
    except ValueError:
        return None
    want = scheduler_versions()
    where = f"its image {image}" if image else "its worker's Python"
    if not have.get("distributed"):
        said = f"{where} has no distributed (Python {have.get('python')})"
    else:
        said = f"{where} runs " + ", ".join(
            f"{name} {have.get(name)} where the scheduler runs {want[name]}"
            for name in ("python", *PACKAGES)
            if have.get(name) != want.get(name)
        )
    pins = " ".join(f"{name}=={want[name]}" for name in PACKAGES)
    return (
        f"tag {tag!r} cannot start workers: {said}; rebuild the image on Python "
        f"{want['python']} with {pins} (e.g. `pip install {pins}` in its Dockerfile target), "
        f"or set the scalable.container.check-versions config to false to try it anyway."
    )
