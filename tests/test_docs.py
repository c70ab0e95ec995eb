"""The documentation site stays true to the code: every error sentence the package raises is
explained in docs/troubleshooting.md, every public name has an API page, every configuration key
has a meaning in the generated reference, and every tutorial is built (executed, or recorded).

Pure checks of files (no Sphinx build): the build itself is a step of .ci/run.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))


def _render(node, src):
    """A raised message as the page shows it: placeholders as ``<expression>``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            v.value if isinstance(v, ast.Constant) else f"<{ast.get_source_segment(src, v.value)}>"
            for v in node.values
        )
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _render(node.left, src), _render(node.right, src)
        return None if left is None or right is None else left + right
    if isinstance(node, ast.IfExp):
        return _render(node.body, src)
    return None


def raised_messages():
    """``(place, message)`` for every ``raise Error("...")`` with a literal message in scalable/."""
    found = []
    for path in sorted((ROOT / "scalable").rglob("*.py")):
        src = path.read_text()
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
                message = _render(node.exc.args[0], src)
                if message:
                    found.append((f"{path.relative_to(ROOT)}:{node.lineno}", message))
    return found


def _fragments(message):
    """The literal pieces of a message between its placeholders, longest first."""
    pieces = [p.strip(" .;:,") for p in re.split(r"<[^<>]*>", message)]
    return sorted((p for p in pieces if p), key=len, reverse=True)


def test_raised_messages_are_found():
    """The scan sees the package's sentences (so the next test cannot pass on nothing)."""
    messages = dict(raised_messages())
    assert len(messages) > 100
    assert any("is not a Slurm time" in m for m in messages.values())


def test_every_raised_sentence_is_in_troubleshooting():
    page = " ".join((DOCS / "troubleshooting.md").read_text().split())
    missing = []
    for place, message in raised_messages():
        pieces = _fragments(" ".join(message.split()))
        if pieces and not all(p in page for p in pieces[:2]):
            missing.append(f"{place}: {message}")
    assert not missing, "explain these in docs/troubleshooting.md:\n" + "\n".join(missing)


def test_every_public_name_has_an_api_entry():
    import scalable

    page = (DOCS / "api" / "index.md").read_text()
    names = set(scalable.__all__) | set(scalable._LAZY)

    def listed(name):
        return re.search(rf"(^|\s|scalable\.){re.escape(name)}(\s|\(|$)", page, re.MULTILINE)

    undocumented = sorted(n for n in names if not listed(n))
    assert not undocumented, f"add these to docs/api/index.md: {undocumented}"


def test_every_configuration_key_has_a_meaning():
    pytest.importorskip("docutils")
    import scalable_docs

    entries = scalable_docs.config_entries((ROOT / "scalable" / "scalable.yaml").read_text())
    keys = {e["key"] for e in entries}
    for key in ("scalable.slurm.walltime", "scalable.relay.allowlist", "scalable.cache.directory"):
        assert key in keys
    leaves = [e for e in entries if e["default"] != ""]
    silent = [e["key"] for e in leaves if not e["comment"]]
    assert not silent, f"comment these keys in scalable/scalable.yaml: {silent}"
    table = "\n".join(
        scalable_docs.config_table_lines((ROOT / "scalable" / "scalable.yaml").read_text())
    )
    for e in leaves:
        assert f"``{e['key']}``" in table


def test_every_subcommand_has_help_in_the_reference():
    pytest.importorskip("docutils")
    import scalable_docs

    titles = [t for t, _ in scalable_docs.help_sections("scalable.cli:build_parser")]
    for command in (
        "scalable demo",
        "scalable bootstrap",
        "scalable kernel install",
        "scalable relay run",
        "scalable cache clear",
    ):
        assert command in titles
    magic = [
        t for t, _ in scalable_docs.help_sections("scalable.jupyter.magic_parser:build_parser")
    ]
    assert "%scalable scale" in magic and "%scalable panel" in magic


def test_tutorials_are_executed_or_recorded():
    """Every notebook is in the tutorials' toctree; all run at build time except the Slurm
    one, which carries the outputs of a recorded run instead."""
    conf = (DOCS / "conf.py").read_text()
    index = (DOCS / "tutorials" / "index.md").read_text()
    excluded = re.search(r"nb_execution_excludepatterns = (\[.*?\])", conf).group(1)
    for nb in sorted((DOCS / "tutorials").glob("*.ipynb")):
        assert nb.stem in index, f"{nb.name} is not in docs/tutorials/index.md"
        cells = [c for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code"]
        if nb.name in excluded:
            assert all(c.get("outputs") for c in cells), f"{nb.name}: record its outputs"
        else:
            assert not any(c.get("outputs") for c in cells), f"{nb.name}: clear its outputs"
    assert 'nb_execution_mode = "force"' in conf


def test_the_docs_extension_examples_run():
    pytest.importorskip("docutils")
    import doctest

    import scalable_docs

    result = doctest.testmod(scalable_docs)
    assert result.attempted >= 2 and not result.failed
