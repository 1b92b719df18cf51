"""docs/adopting.md stays true: every code block it says comes from a file of the example
site (a ``*from `PATH`:*`` line right before it) is a run of whole lines of that file,
its settings table is ``engine.settings.SETTINGS``, and its other Python blocks parse
and import only what the engine has."""

from __future__ import annotations

import ast
import importlib
import re
from dataclasses import dataclass

from engine.settings import SETTINGS
from tests.servers import ROOT

DOC = ROOT / "docs" / "adopting.md"
MARK = re.compile(r"^(\s*)\*from `([^`]+)`:\*$")  # the line right before a copied block
FENCE = re.compile(r"^(\s*)```(\w*)$")


@dataclass
class Block:
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    source: str | None  # the file it is copied from


def blocks(lines: list[str]) -> list[Block]:
    """The fenced blocks of the doc, without the fence's indentation, each with the file
    named by a ``*from `PATH`:*`` line right before it."""
    out, i, source = [], 0, None
    while i < len(lines):
        mark, fence = MARK.match(lines[i]), FENCE.match(lines[i])
        if mark:
            source = mark.group(2)
        elif fence:
            indent, body, i = len(fence.group(1)), [], i + 1
            while not FENCE.match(lines[i]) or lines[i].strip() != "```":
                body.append(lines[i][indent:] if lines[i].strip() else "")
                i += 1
            out.append(Block(i - len(body), fence.group(2), "\n".join(body), source))
            source = None
        elif lines[i].strip():
            source = None  # a mark names the very next block only
        i += 1
    return out


def doc_blocks() -> list[Block]:
    return blocks(DOC.read_text().splitlines())


def copied(block: str, text: str) -> bool:
    """Whether ``block`` is a run of whole, consecutive lines of ``text``."""
    want, have = block.splitlines(), text.splitlines()
    return any(have[i : i + len(want)] == want for i in range(len(have) - len(want) + 1))


def test_copied_means_whole_consecutive_lines():
    text = "a\nbb\ncc  # why\nd\n"
    assert copied("a\nbb", text) and copied("cc  # why\nd", text)
    assert not copied("bb\ncc", text) and not copied("a\nd", text) and not copied("b", text)


def test_marked_blocks_are_verbatim_in_their_example_file():
    marked = [b for b in doc_blocks() if b.source]
    sources = {b.source for b in marked}
    assert sources == {
        "examples/recipes/recipes.py",
        "examples/recipes/make_celery.py",
        "examples/recipes/README.md",
    }
    stale = []
    for b in marked:
        if not copied(b.text, (ROOT / b.source).read_text()):
            stale.append(f"docs/adopting.md:{b.line} is not in {b.source}:\n{b.text}")
    assert stale == [], "\n\n".join(stale)


def test_every_step_of_the_example_shows_its_engine_lines():
    shown = "\n".join(b.text for b in doc_blocks() if b.source == "examples/recipes/recipes.py")
    for call in (
        "Counter(",
        "Registry(",
        "FlaskCounters(",
        "counters.init_app(app)",
        "schema.create(",
        "init_celery(",
        "redbeat.RedBeatScheduler",
        "counters.view(",
        "counters.created(",
        "counters.deleted(",
        "counters.counted_write(",
        "counters.read_rows(",
        "TargetMissing",
        "counters.admin_blueprint(",
        "counters.metrics_view",
    ):
        assert call in shown, call


def test_a_mark_names_only_the_block_right_after_it():
    doc = ["*from `a.py`:*", "```python", "x = 1", "```", "text", "```python", "y", "```"]
    first, second = blocks(doc)
    assert (first.source, first.text, first.line) == ("a.py", "x = 1", 2)
    assert second.source is None
    nested = ["* item", "  *from `b.py`:*", "  ```python", "  def f():", "      pass", "  ```"]
    (block,) = blocks(nested)
    assert (block.source, block.text) == ("b.py", "def f():\n    pass")


def settings_table() -> str:
    rows = [f"| `{s.key}` | `{s.default!r}` | {s.doc} |" for s in SETTINGS]
    return "\n".join(["| setting | default | meaning |", "|---|---|---|", *rows])


def test_the_settings_table_is_engine_settings():
    text = DOC.read_text()
    table = text.split("<!-- settings table -->\n", 1)[1].split("\n<!-- end settings table -->")[0]
    assert table == settings_table(), f"paste this into docs/adopting.md:\n{settings_table()}"


def test_other_python_blocks_parse_and_import_what_the_engine_has():
    checked = 0
    for b in doc_blocks():
        if b.source or b.lang != "python":
            continue
        tree = ast.parse(b.text, f"docs/adopting.md:{b.line}")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module.split(".")[0] == "engine":
                module = importlib.import_module(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name) or importlib.import_module(
                        f"{node.module}.{alias.name}"
                    ), (b.line, alias.name)
                    checked += 1
    assert checked >= 1  # the Alembic migration
