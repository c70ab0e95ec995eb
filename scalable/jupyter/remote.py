"""Run a notebook cell's code on a worker and bring back its output and result.

``%%scalable TAG`` sends :func:`run_cell` (pickled by value: the model's image needs
``distributed``, not ``scalable``) with the cell's source to a worker of ``TAG``. The code
runs there as IPython would run it: statements, then the value of a final expression is the
result. Printed output is captured and returned as text; an error comes back as
:class:`RemoteCellError`, whose traceback shows only the cell's own lines.

Examples
--------
>>> out = run_cell("print('hi')\\n6 * 7")
>>> out["stdout"], out["result"]
('hi\\n', 42)
"""

from __future__ import annotations

import ast
import contextlib
import io
import linecache
import os
import socket
import sys
import traceback

FILENAME = "<scalable-cell>"


class RemoteCellError(Exception):
    """The cell raised on the worker. IPython shows the remote traceback (cell lines only)."""

    def __init__(self, message, remote_traceback="", worker=""):
        super().__init__(message)
        self.remote_traceback = remote_traceback
        self.worker = worker

    def _render_traceback_(self):
        head = f"The cell failed on worker {self.worker}:" if self.worker else "The cell failed:"
        return [head, *self.remote_traceback.rstrip("\n").splitlines()]


def _where() -> dict:
    info = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "image": os.environ.get("APPTAINER_CONTAINER") or os.environ.get("SINGULARITY_CONTAINER"),
    }
    try:
        from distributed import get_worker

        info["worker"] = str(get_worker().name)
    except ValueError:
        info["worker"] = ""
    return info


def _picklable(value):
    """The value if it can travel back to the kernel, else its repr."""
    try:
        import cloudpickle

        cloudpickle.dumps(value)
        return value, False
    except Exception:
        return repr(value), True


def run_cell(source: str, namespace: dict | None = None) -> dict:
    """Execute ``source``; return stdout, stderr, result (of a final expression) and where.

    Parameters
    ----------
    source : str
        Python code, as in a notebook cell.
    namespace : dict, optional
        Variables the code sees (``%%scalable TAG --push x``).

    Returns
    -------
    dict
        ``stdout``, ``stderr``, ``result``, ``result_is_repr``, ``error`` (None or
        ``{"type", "message", "traceback"}``), ``worker``, ``host``, ``pid``, ``image``.
    """
    ns = {"__name__": "__main__", **(namespace or {})}
    out, err = io.StringIO(), io.StringIO()
    result, error = None, None
    # redirect_stdout swaps sys.stdout for the whole worker process; a worker runs one task of
    # its tag at a time, so only untagged tasks running beside the cell could mix output in.
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        # so the traceback can quote the cell's lines
        linecache.cache[FILENAME] = (len(source), None, source.splitlines(True), FILENAME)
        try:
            tree = ast.parse(source, FILENAME, "exec")
            last = None
            if tree.body and isinstance(tree.body[-1], ast.Expr):
                last = ast.Expression(tree.body.pop().value)
            exec(compile(tree, FILENAME, "exec"), ns)
            if last is not None:
                result = eval(compile(last, FILENAME, "eval"), ns)
        except BaseException as exc:  # the user's code: report everything, kill nothing
            tb = traceback.extract_tb(exc.__traceback__)
            mine = traceback.StackSummary.from_list([f for f in tb if f.filename == FILENAME])
            lines = ["Traceback (most recent call last):\n", *mine.format()]
            if isinstance(exc, SyntaxError):
                lines = traceback.format_exception_only(type(exc), exc)
            else:
                lines += traceback.format_exception_only(type(exc), exc)
            error = {"type": type(exc).__name__, "message": str(exc), "traceback": "".join(lines)}
    value, is_repr = _picklable(result)
    return {
        "stdout": out.getvalue(),
        "stderr": err.getvalue(),
        "result": value,
        "result_is_repr": is_repr,
        "error": error,
        **_where(),
    }


class ReprText(str):
    """A result that could not travel back: shown as its repr, without quotes."""

    def __repr__(self):
        return str(self)


def show(outcome: dict):
    """Print the captured output in the kernel; return the result or raise the remote error."""
    if outcome["stdout"]:
        sys.stdout.write(outcome["stdout"])
    if outcome["stderr"]:
        sys.stderr.write(outcome["stderr"])
    if outcome["error"]:
        e = outcome["error"]
        raise RemoteCellError(f"{e['type']}: {e['message']}", e["traceback"], outcome["worker"])
    if outcome["result_is_repr"]:
        return ReprText(outcome["result"])
    return outcome["result"]


__all__ = ["run_cell", "show", "RemoteCellError"]
