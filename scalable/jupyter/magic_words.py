"""The library's sentences, reworded for someone typing ``%scalable`` magics.

``add_container``, ``SlurmCluster`` and the tag checks say what to change in Python terms
(``memory='20G'``, ``path='/x.sif'``, ``cluster.add_container(tag='gcam', ...)``). A magic user
types options instead, so :func:`as_magic` rewrites those spellings to the magic's own
(``--memory 20G``, ``--image /x.sif``, ``%scalable container gcam``), and
:func:`unknown_tag` says "did you mean" for tags as the parser does for subcommands;
:func:`user_errors` shows any of them as a ``UsageError``: the sentence, no traceback.

Examples
--------
>>> as_magic("container 'gcam': memory='lots' is not a size: write it as Slurm does, e.g. memory='20G' or memory='512M'.")
'%scalable container gcam: --memory lots is not a size: write it as Slurm does, e.g. --memory 20G or --memory 512M.'
"""

from __future__ import annotations

import contextlib
import difflib
import re

from IPython.core.error import UsageError

from ..containers import ContainerError
from ..runner import CommandError, SubmitError

#: Exceptions that are the user's to fix (Slurm refusing a submission included): shown as
#: their message alone.
USER_ERRORS = (
    ValueError,
    KeyError,
    ContainerError,
    CommandError,
    SubmitError,
    TimeoutError,
    OSError,
)

# keyword argument -> magic option (the cluster's and the container's)
_OPTIONS = {
    "path": "--image",
    "memory": "--memory",
    "cpus": "--cpus",
    "walltime": "--walltime",
    "queue": "--queue",
    "account": "--account",
    "interface": "--interface",
    "work_dir": "--work-dir",
    "workers_per_job": "--workers-per-job",
    "runtime": "--runtime",
}


def _quote(value: str) -> str:
    return value if re.fullmatch(r"[\w./:@%+=,-]+", value) else repr(value)


def _pairs(text: str, sep: str) -> str:
    pairs = re.findall(r"'([^']*)'\s*:\s*'([^']*)'", text)
    return " ".join(f"{_quote(a + sep + b)}" for a, b in pairs) or "HOST:CONTAINER"


def as_magic(message: str) -> str:
    """``message`` with Python spellings replaced by the ``%scalable`` options to type.

    Examples
    --------
    >>> as_magic("container 'nope': image '/w/nope.sif' does not exist: build it (scalable bootstrap) or pass path='/path/to/nope_container.sif'.")
    "%scalable container nope: image '/w/nope.sif' does not exist: build it (scalable bootstrap) or pass --image /path/to/nope_container.sif."
    >>> as_magic("container 'gcam': bind source '/x' does not exist on this machine: create it or fix the host side of dirs={'/x': '/data'}.")
    "%scalable container gcam: bind source '/x' does not exist on this machine: create it or fix the host side of --bind /x:/data."
    >>> as_magic("tag 'a-b' is not valid: use letters, digits and underscores, starting with a letter, at most 32 characters (e.g. tag='a_b').")
    "tag 'a-b' is not valid: use letters, digits and underscores, starting with a letter, at most 32 characters (e.g. a_b)."
    """
    text = re.sub(r"^container '(\w+)':", r"%scalable container \1:", message)
    text = re.sub(r"\bdirs=\{([^}]*)\}", lambda m: f"--bind {_pairs(m.group(1), ':')}", text)
    text = re.sub(r"\benv=\{([^}]*)\}", lambda m: f"--env {_pairs(m.group(1), '=')}", text)
    text = re.sub(
        r"\bjob_script_prologue=\['([^']*)'\]", lambda m: f"--prologue {_quote(m.group(1))}", text
    )
    text = re.sub(r"\btag='(\w*)'", r"\1", text)

    def option(m):
        value = m.group(3) if m.group(3) is not None else m.group(4)
        return f"{_OPTIONS[m.group(1)]} {_quote(value)}"

    names = "|".join(_OPTIONS)
    return re.sub(rf"\b({names})=('([^']*)'|([\w.:-]+))", option, text)


def unknown_tag(tag: str, known, prog: str) -> str:
    """The sentence for a tag the cluster does not have, with a "did you mean".

    Examples
    --------
    >>> unknown_tag("gcm", ["gcam", "stitches"], "%scalable scale")
    "%scalable scale: this cluster has no container 'gcm': did you mean gcam? Its containers: gcam, stitches (`%scalable container gcm --cpus 1 --memory 1G` adds one)."
    >>> unknown_tag("gcam", [], "%scalable add")
    "%scalable add: this cluster has no container 'gcam' yet: type `%scalable container gcam --cpus 1 --memory 1G` first."
    """
    known = list(known)
    add = f"%scalable container {tag} --cpus 1 --memory 1G"
    if not known:
        return f"{prog}: this cluster has no container {tag!r} yet: type `{add}` first."
    close = difflib.get_close_matches(tag, known, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}? Its" if close else "its"
    return (
        f"{prog}: this cluster has no container {tag!r}: {hint} containers: "
        f"{', '.join(known)} (`{add}` adds one)."
    )


@contextlib.contextmanager
def user_errors():
    """Turn the library's user-facing errors into UsageErrors (no traceback)."""
    try:
        yield
    except UsageError:
        raise
    except SubmitError as e:  # Slurm refused a submission: Slurm's own words
        raise UsageError(str(e)) from None
    except USER_ERRORS as e:  # worded for magics: options to type, not keyword arguments
        raise UsageError(as_magic(str(e)) or type(e).__name__) from None
