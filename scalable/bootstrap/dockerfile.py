"""Find a Dockerfile's build stages (``FROM [--platform=...] image [AS name]``).

Parsed the way BuildKit reads the file: the ``# escape=`` parser directive, line continuations
(with comment and blank lines inside them dropped), case-insensitive instructions and ``AS``,
``--flag=value`` options before the image, and heredoc bodies (``RUN <<EOF ... EOF``), whose
lines are never instructions even when they begin with ``FROM``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_DIRECTIVE = re.compile(r"^#\s*([a-zA-Z][a-zA-Z0-9_-]*)\s*=\s*(.*?)\s*$")
_HEREDOC = re.compile(r"<<-?\s*([\"']?)([A-Za-z_][A-Za-z0-9_]*)\1")
_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_.-]*$")


class DockerfileError(ValueError):
    """The Dockerfile cannot be read as one; the message names the line."""


@dataclass(frozen=True)
class Stage:
    """One ``FROM`` of a Dockerfile.

    Attributes
    ----------
    name : str or None
        The ``AS`` name, lower-cased as Docker does; ``None`` for an unnamed stage.
    base : str
        The image (or earlier stage) it starts from.
    platform : str or None
        The ``--platform`` flag, if any.
    line : int
        1-based line number of the ``FROM``.
    """

    name: str | None
    base: str
    platform: str | None
    line: int


def instructions(text: str) -> list[tuple[int, str, str]]:
    """Split Dockerfile text into ``(line, INSTRUCTION, arguments)`` triples.

    Examples
    --------
    >>> instructions("from a AS b\\nRUN echo \\\\\\n  # note\\n  hi\\n")
    [(1, 'FROM', 'a AS b'), (2, 'RUN', 'echo hi')]
    """
    lines = text.splitlines()
    escape = "\\"
    # Parser directives: only leading comment lines of the form "# key=value".
    for raw in lines:
        m = _DIRECTIVE.match(raw.strip())
        if not m:
            break
        if m.group(1).lower() == "escape":
            if m.group(2) not in ("\\", "`"):
                raise DockerfileError(f"escape directive must be \\ or `, not {m.group(2)!r}")
            escape = m.group(2)
    out: list[tuple[int, str, str]] = []
    i, n = 0, len(lines)
    while i < n:
        stripped = lines[i].strip()
        if not stripped or stripped.startswith("#"):
            i += 1
            continue
        start, parts = i + 1, []
        while True:
            line = lines[i].rstrip()
            i += 1
            if line.endswith(escape):
                parts.append(line[:-1])
                # Inside a continuation, comment and empty lines are dropped, not ended on.
                while i < n and (not lines[i].strip() or lines[i].strip().startswith("#")):
                    i += 1
                if i < n:
                    continue
            else:
                parts.append(line)
            break
        joined = " ".join(p.strip() for p in parts).strip()
        word, _, args = joined.partition(" ")
        out.append((start, word.upper(), args.strip()))
        # Heredoc bodies follow the instruction line; skip them up to their terminators.
        for m in _HEREDOC.finditer(args):
            if word.upper() not in ("RUN", "COPY", "ADD"):
                continue
            terminator = m.group(2)
            while i < n and lines[i].strip() != terminator:
                i += 1
            i += 1
    return out


def parse_stages(text: str) -> list[Stage]:
    """All ``FROM`` stages, in order.

    Examples
    --------
    >>> [s.name for s in parse_stages("FROM --platform=linux/amd64 debian:12 as Base\\nFROM base\\n")]
    ['base', None]
    """
    stages = []
    for line, word, args in instructions(text):
        if word != "FROM":
            continue
        tokens = args.split()
        platform = None
        while tokens and tokens[0].startswith("--"):
            flag, _, value = tokens.pop(0).partition("=")
            if flag.lower() == "--platform":
                platform = value
        if not tokens:
            raise DockerfileError(f"line {line}: FROM names no image")
        base, rest = tokens[0], tokens[1:]
        name = None
        if rest:
            if len(rest) != 2 or rest[0].lower() != "as":
                raise DockerfileError(
                    f"line {line}: expected `FROM image AS name`, got `FROM {args}`"
                )
            if not _NAME.match(rest[1]):
                raise DockerfileError(f"line {line}: {rest[1]!r} is not a valid stage name")
            name = rest[1].lower()
        stages.append(Stage(name, base, platform, line))
    return stages


def targets(path: str | Path) -> list[str]:
    """Names of a Dockerfile's named stages (what ``docker build --target`` accepts).

    Examples
    --------
    >>> targets("Dockerfile")                     # doctest: +SKIP
    ['base', 'scalable', 'apptainer', 'gcam', ...]
    """
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise DockerfileError(
            f"no Dockerfile at {str(path)!r}: run from a scalable checkout or give --dockerfile PATH"
        ) from None
    seen: list[str] = []
    for stage in parse_stages(text):
        if stage.name and stage.name not in seen:
            seen.append(stage.name)
    return seen


def model_targets(path: str | Path) -> list[str]:
    """Targets worth offering as models: named stages nothing else builds on or copies from,
    except the converter.

    Examples
    --------
    >>> model_targets("Dockerfile")                # doctest: +SKIP
    ['gcam', 'stitches', 'osiris', 'hector', 'xanthos', 'demeter', 'tethys', 'basd']
    """
    text = Path(path).read_text()
    stages = parse_stages(text)
    used = {s.base.lower() for s in stages}
    for _, word, args in instructions(text):
        if word in ("COPY", "ADD"):  # COPY --from=<stage> makes a stage a building block too
            used.update(
                t.split("=", 1)[1].lower() for t in args.split() if t.lower().startswith("--from=")
            )
    return [s.name for s in stages if s.name and s.name not in used and s.name != "apptainer"]
