"""The engine is used through its public API only, and its core needs neither Flask nor
Celery: checked on the source of every module outside ``engine/``."""

from __future__ import annotations

import ast
import subprocess
import sys

import engine
from engine import schema
from tests.servers import ROOT

# The door's collaborators: nothing outside the engine may reach them.
INTERNALS = {"buffer", "live", "existence", "stats", "flusher", "reconciler", "activity_series"}
# What a site may import: the package itself and these modules.
PUBLIC_MODULES = {
    "engine",
    "engine.flask",
    "engine.celery",
    "engine.celery.schedule",
    "engine.prometheus",
    "engine.alembic",
    "engine.settings",
    "engine.intervals",
    "engine.logs",
    "engine.schema",
    "engine.spool",
    "engine.sqlarrays",
    "engine.visitors",
    "engine.flask.visitors",
    "engine.wire",  # the lean script connection: harness/round_trips.py counts its calls
}
# The engine's own white-box tests may look inside it.
WHITE_BOX = ("tests/engine/", "tests/cluster/")
INTEGRATIONS = {"flask", "celery", "prometheus"}


def outside_sources() -> list:
    files = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        top = rel.split("/")[0]
        if top in ("engine", ".venv", "build", "dist", ".data") or rel.startswith(WHITE_BOX):
            continue
        files.append((rel, ast.parse(path.read_text(), rel)))
    return files


def test_nothing_outside_the_engine_touches_its_internals():
    found = []
    for rel, tree in outside_sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in INTERNALS:
                own = isinstance(node.value, ast.Name) and node.value.id == "self"
                if not own:  # a class's own attribute of that name is its business
                    found.append(f"{rel}:{node.lineno} .{node.attr}")
            module = node.module or "" if isinstance(node, ast.ImportFrom) else ""
            if module.split(".")[0] == "engine" and module not in PUBLIC_MODULES:
                found.append(f"{rel}:{node.lineno} from {module}")
            if isinstance(node, ast.Import):
                for alias in node.names:
                    top = alias.name.split(".")[0]
                    if top == "engine" and alias.name not in PUBLIC_MODULES:
                        found.append(f"{rel}:{node.lineno} import {alias.name}")
    assert found == []


def test_the_scan_sees_the_sites_that_use_the_engine():
    scanned = {rel for rel, _ in outside_sources()}
    assert {"app/counters.py", "app/routes/content.py", "benchmarks/flush_bench.py"} <= scanned
    assert not any(rel.startswith(("engine/", "tests/engine/")) for rel in scanned)


def test_the_core_imports_neither_flask_nor_celery_nor_prometheus():
    core = sorted(
        f"engine.{p.stem}"
        for p in (ROOT / "engine").glob("*.py")
        if p.stem not in ("__init__", *INTEGRATIONS)
    )
    assert "engine.counters" in core and "engine.flush" in core
    code = (
        f"import sys, {', '.join(['engine', *core])};"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('flask', 'celery', 'redbeat', 'prometheus_client', 'alembic')];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_every_exported_name_exists():
    assert sorted(engine.__all__) == sorted(set(engine.__all__))
    for name in engine.__all__:
        assert getattr(engine, name) is not None, name


def test_released_schema_steps_never_change():
    for step, pinned in schema.STEPS.items():
        assert schema.checksum(step) == pinned, f"{step} was edited: add a new step instead"
    files = sorted(p.stem for p in (ROOT / "engine" / "sql").glob("*.sql"))
    assert files == sorted(schema.STEPS)
