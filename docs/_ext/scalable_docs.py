"""Sphinx directives that render scalable's own sources into the documentation.

``.. scalable-config::`` renders ``scalable/scalable.yaml`` (every key, its default and its
comment) and ``.. scalable-help::`` renders a command's ``--help`` for each subcommand (the
``scalable`` command, the ``%scalable`` magic), so both references are rebuilt from the code at
every build and cannot drift.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re

from docutils import nodes
from docutils.parsers.rst import Directive
from docutils.statemachine import StringList

_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_-]+):(?P<rest>.*)$")


def _split_comment(rest: str) -> tuple[str, str]:
    """``' 5s   # how often'`` -> ``('5s', 'how often')``, ignoring ``#`` inside quotes."""
    quote = None
    for i, ch in enumerate(rest):
        if ch in "\"'":
            quote = None if quote == ch else (quote or ch)
        elif ch == "#" and quote is None:
            return rest[:i].strip(), rest[i + 1 :].strip()
    return rest.strip(), ""


def config_entries(text: str) -> list[dict]:
    """Every key of a commented Dask-style yaml file, in order, with its comment.

    A key's comment is the comment on its line plus the comment-only lines that continue it
    (indented deeper than the key), or, failing that, the comment-only lines just above it.

    Examples
    --------
    >>> text = '''scalable:
    ...   # where things go
    ...   work-directory: null
    ...   slurm:
    ...     walltime: "01:00:00"   # per job
    ...                            # (see cluster.walltime)
    ... '''
    >>> for e in config_entries(text):
    ...     print(e["key"], e["default"] or "-", e["comment"] or "-", sep=" | ")
    scalable | - | -
    scalable.work-directory | null | where things go
    scalable.slurm | - | -
    scalable.slurm.walltime | "01:00:00" | per job (see cluster.walltime)
    """
    entries: list[dict] = []
    stack: list[tuple[int, str]] = []
    above: list[str] = []
    last = None
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            above, last = [], None
            continue
        if stripped.startswith("#"):
            indent = len(line) - len(line.lstrip())
            if last is not None and indent > last["indent"]:
                last["comment"] = f"{last['comment']} {stripped[1:].strip()}".strip()
            else:
                above.append(stripped[1:].strip())
                last = None
            continue
        m = _KEY.match(line)
        if not m:
            continue
        indent = len(m["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = ".".join([*(k for _, k in stack), m["key"]])
        default, comment = _split_comment(m["rest"])
        entry = {
            "key": key,
            "default": default,
            "indent": indent,
            "comment": comment or " ".join(above).strip(),
        }
        entries.append(entry)
        stack.append((indent, m["key"]))
        # only an inline comment continues on the comment-only lines below it
        above, last = [], (entry if comment else None)
    return entries


def _yaml_path() -> str:
    import scalable

    return os.path.join(os.path.dirname(scalable.__file__), "scalable.yaml")


def config_table_lines(text: str) -> list[str]:
    """reST for the configuration reference: one section per group, one row per key."""
    out = []
    rows = [e for e in config_entries(text) if e["key"] != "scalable"]
    groups: dict[str, list[dict]] = {}
    for e in rows:
        parts = e["key"].split(".")
        group = parts[1] if len(parts) > 2 or e["default"] == "" else "general"
        groups.setdefault(group, []).append(e)
    for group, items in groups.items():
        head = next((e for e in items if e["key"] == f"scalable.{group}"), None)
        title = f"``scalable.{group}``" if group != "general" else "Top level"
        out += [title, "-" * len(title), ""]
        if head and head["comment"]:
            out += [head["comment"], ""]
        out += [
            ".. list-table::",
            "   :header-rows: 1",
            "   :widths: 30 20 50",
            "",
            "   * - key",
            "     - default",
            "     - meaning",
        ]
        for e in items:
            if e is head:
                continue
            default = f"``{e['default']}``" if e["default"] else "(see below)"
            env = "DASK_" + e["key"].upper().replace(".", "__").replace("-", "_")
            comment = e["comment"] or ""
            out += [
                f"   * - ``{e['key']}``",
                f"     - {default}",
                f"     - {_rst_text(comment)} (environment: ``{env}``)",
            ]
        out.append("")
    return out


def _rst_text(text: str) -> str:
    """Comments are plain text: quote what reST would read as markup."""
    text = text.replace("\\", "\\\\")
    return re.sub(r"([*`|_])", r"\\\1", text) if text else "(no comment)"


class ConfigDirective(Directive):
    """``.. scalable-config::``: the configuration reference, from scalable.yaml."""

    has_content = False

    def run(self):
        path = _yaml_path()
        self.state.document.settings.record_dependencies.add(path)
        with open(path) as f:
            lines = config_table_lines(f.read())
        node = nodes.section()
        node.document = self.state.document
        self.state.nested_parse(
            StringList(lines, source=path), self.content_offset, node, match_titles=True
        )
        return node.children


def help_sections(factory: str = "scalable.cli:build_parser") -> list[tuple[str, str]]:
    """``[(title, help text)]`` for a parser and each of its subcommands (and theirs).

    ``factory`` is ``"module:function"`` returning an :class:`argparse.ArgumentParser`.

    Examples
    --------
    >>> titles = [t for t, _ in help_sections("scalable.jupyter.magic_parser:build_parser")]
    >>> titles[:3]
    ['%scalable', '%scalable cluster', '%scalable container']
    """
    module, _, func = factory.partition(":")
    parser = getattr(importlib.import_module(module), func)()
    out = [(parser.prog, parser.format_help())]

    def walk(p: argparse.ArgumentParser):
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    out.append((sub.prog, sub.format_help()))
                    walk(sub)

    walk(parser)
    return out


class HelpDirective(Directive):
    """``.. scalable-help:: module:function``: a parser's ``--help`` and each subcommand's,
    as the command prints them (``scalable.cli:build_parser`` when no argument is given)."""

    optional_arguments = 1
    option_spec = {"title": str}  # the first section's title, when the program's name is taken
    has_content = False

    def run(self):
        factory = self.arguments[0] if self.arguments else "scalable.cli:build_parser"
        old = os.environ.get("COLUMNS")
        os.environ["COLUMNS"] = "100"  # argparse wraps to this width
        try:
            sections = help_sections(factory)
        finally:
            if old is None:
                os.environ.pop("COLUMNS", None)
            else:
                os.environ["COLUMNS"] = old
        lines: list[str] = []
        for i, (title, text) in enumerate(sections):
            heading = (
                self.options["title"] if i == 0 and "title" in self.options else f"``{title}``"
            )
            lines += [heading, "-" * len(heading), "", ".. code-block:: text", ""]
            lines += [f"   {ln}" if ln.strip() else "" for ln in text.splitlines()]
            lines.append("")
        node = nodes.section()
        node.document = self.state.document
        self.state.nested_parse(StringList(lines), self.content_offset, node, match_titles=True)
        return node.children


def _defined_in_scalable(obj) -> bool:
    target = getattr(obj, "fget", None) or getattr(obj, "__func__", None) or obj
    return str(getattr(target, "__module__", "") or "").split(".")[0] == "scalable"


def skip_foreign_members(app, what, name, obj, skip, options):
    """API pages list what scalable defines (its own and the tagged mixin's members), not the
    members a class inherits from distributed, dask-jobqueue or Python."""
    if what == "class" and not _defined_in_scalable(obj):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", skip_foreign_members)
    app.add_directive("scalable-config", ConfigDirective)
    app.add_directive("scalable-help", HelpDirective)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
