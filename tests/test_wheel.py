"""The wheel is what another site installs: built from this checkout, installed with its
extras into a fresh virtualenv (no system site-packages, no checkout on the path), it
carries the engine and nothing else, and the example site (examples/recipes) runs on it:
its smoke script, then the README's commands (init-db, flask run, celery worker and beat)
until a counted view and heart are in Postgres.

Needs the package index (build isolation fetches setuptools; the extras come from the
index too): locally, a failing pip skips these tests, in CI it fails them. Run only them
with ``-m network``, or leave them out with ``-m "not network"``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from tests.examples.isolation import EXAMPLE, REDIS_DB, clean_redis, scope_and_queue, site_env
from tests.processes import log_text, wait_for
from tests.servers import CI, ROOT, admin_pg_url, redis_url, scratch_database

pytestmark = [pytest.mark.network, pytest.mark.timeout(900)]

# the engine's extras the example uses, and its own dependencies: Flask-SQLAlchemy, and
# Celery's Redis transport for its Redis broker (the [celery] extra leaves the broker open)
EXTRAS = "flask,celery,prometheus"
SITE_DEPS = ["flask-sqlalchemy", "celery[redis]"]
SITE_FILES = ("recipes.py", "make_celery.py", "smoke.py")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc")
PIP_TIMEOUT_S = 600
WAIT_S = 60


def clean_env(**extra: str) -> dict:
    """The environment of the venv's processes: no PYTHONPATH, no virtualenv, no FLASK_*."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("FLASK_")}
    return {**env, "PYTHONNOUSERSITE": "1", **extra}


def run(cmd: list, cwd: Path, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(c) for c in cmd],
        cwd=cwd,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT_S,
        **kw,
    )


def pip(cmd: list, cwd: Path) -> None:
    done = run(cmd, cwd)
    if done.returncode != 0:
        message = f"{' '.join(map(str, cmd))} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
        if CI:
            pytest.fail(message)
        pytest.skip(f"package index unusable? {message}")


class Venv:
    def __init__(self, root: Path, wheel: Path, timings: dict[str, float]) -> None:
        self.root = root
        self.wheel = wheel
        self.timings = timings

    def bin(self, name: str) -> Path:
        return self.root / "bin" / name

    @property
    def python(self) -> Path:
        return self.bin("python")


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Venv:
    """A fresh virtualenv with the wheel built from this checkout and the site's deps;
    ``timings`` says how long each step took (printed, never asserted)."""
    tmp = tmp_path_factory.mktemp("wheel")
    timings = {}
    # pip builds inside the source tree: a copy, so that the checkout gets no build/ and
    # no stale file left in one can slip into the wheel
    source = tmp / "source"
    shutil.copytree(ROOT / "engine", source / "engine", ignore=IGNORED)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    started = time.monotonic()
    pip([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", tmp / "dist", source], tmp)
    timings["build wheel"] = time.monotonic() - started
    (wheel,) = (tmp / "dist").glob("counter_engine-*.whl")

    started = time.monotonic()
    made = run([sys.executable, "-m", "venv", tmp / "venv"], tmp)
    assert made.returncode == 0, made.stderr
    timings["create venv"] = time.monotonic() - started
    started = time.monotonic()
    pip(
        [tmp / "venv" / "bin" / "python", "-m", "pip", "install", f"{wheel}[{EXTRAS}]", *SITE_DEPS],
        tmp,
    )
    timings["install"] = time.monotonic() - started
    print("wheel test set-up:", ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    return Venv(tmp / "venv", wheel, timings)


def test_the_wheel_carries_the_engine_and_nothing_else(venv):
    names = zipfile.ZipFile(venv.wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"engine", f"{venv.wheel.name.split('-py3')[0]}.dist-info"}
    assert {"engine/lua/incr.lua", "engine/sql/0001_ledger.sql"} <= set(names)
    assert {"engine/flask/__init__.py", "engine/celery/__init__.py"} <= set(names)
    dashboard = {
        "templates/counters/dashboard.html",
        "static/uPlot.iife.min.js",
        "static/uPlot.LICENSE",
    }
    assert {f"engine/flask/{name}" for name in dashboard} <= set(names)


def test_the_venv_imports_the_installed_engine_and_no_app(venv, tmp_path):
    no_app = run([venv.python, "-c", "import app"], tmp_path)
    assert no_app.returncode != 0 and "No module named 'app'" in no_app.stderr

    code = (
        "import json, sys, engine, engine.flask, engine.celery, engine.prometheus;"
        "print(json.dumps({'engine': engine.__file__, 'path': sys.path}))"
    )
    found = run([venv.python, "-c", code], tmp_path)
    assert found.returncode == 0, found.stderr
    where = json.loads(found.stdout)
    site_packages = venv.root / "lib"
    assert Path(where["engine"]).is_relative_to(site_packages), where["engine"]
    assert not any(p and Path(p).resolve() == ROOT for p in where["path"])


def copy_site(to: Path) -> Path:
    for name in SITE_FILES:
        shutil.copy(EXAMPLE / name, to / name)
    return to


def test_the_example_smoke_script_runs_on_the_installed_wheel(venv, tmp_path):
    env = clean_env(SMOKE_PG_ADMIN_URL=admin_pg_url(), SMOKE_REDIS_URL=redis_url(REDIS_DB))
    done = run([venv.python, "smoke.py"], copy_site(tmp_path), env)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["view_count"], result["hearts_count"]) == (1, 1)
    assert Path(result["engine"]).is_relative_to(venv.root), result["engine"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def call(method: str, url: str, body: dict | None = None, headers: dict | None = None):
    """One request; (status, body text), or (None, error) when nothing answers."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **(headers or {})}
    request = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return None, str(exc)


def test_readme_commands_from_the_fresh_venv_give_a_working_counter(venv, processes, tmp_path):
    """What examples/recipes/README.md has a newcomer run, with the venv's own scripts."""
    site_dir = copy_site(tmp_path)  # the processes' working directory
    database = scratch_database("wheel")
    scope, queue = scope_and_queue()
    r = redis.Redis.from_url(redis_url(REDIS_DB))
    env = clean_env(**site_env(database.url, scope, queue))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        init = run([venv.bin("flask"), "--app", "recipes", "init-db"], site_dir, env)
        assert init.returncode == 0, init.stdout + init.stderr
        _, web_log = processes.start(
            "web", [venv.bin("flask"), "--app", "recipes", "run", "--port", str(port)], env
        )
        _, worker_log = processes.start(
            "worker",
            [venv.bin("celery"), "-A", "make_celery", "worker", "-Q", queue, "-c", "1"]
            + ["-n", f"wheel-{scope}@%h", "--without-mingle", "--without-gossip"]
            + ["--without-heartbeat", "--loglevel=info"],
            env,
        )
        _, beat_log = processes.start(
            "beat", [venv.bin("celery"), "-A", "make_celery", "beat", "--loglevel=info"], env
        )
        logs = [web_log, worker_log, beat_log]
        wait_for("the site answers", lambda: call("GET", f"{base}/recipes/1")[0], WAIT_S, logs)

        status, body = call("POST", f"{base}/recipes", {"title": "Soup", "author": "ann"})
        assert status == 201, body
        recipe = json.loads(body)["id"]
        assert call("POST", f"{base}/recipes/{recipe}/view")[0] == 204
        assert call("POST", f"{base}/recipes/{recipe}/hearts", headers={"X-User": "bob"})[0] == 201
        live = json.loads(call("GET", f"{base}/recipes/{recipe}")[1])
        assert (live["view_count"], live["hearts_count"]) == (1, 1)

        sql = sa.create_engine(database.url)
        query = sa.text("SELECT view_count, hearts_count FROM recipes WHERE id = :id")

        def flushed():
            with sql.connect() as conn:
                return tuple(conn.execute(query, {"id": recipe}).one()) == (1, 1)

        wait_for("the beat-scheduled flush reaches Postgres", flushed, WAIT_S, logs)
        sql.dispose()
        status, metrics = call("GET", f"{base}/metrics")
        assert status == 200 and "counter_flush_runs_total" in metrics, metrics[:500]
        assert "Traceback" not in log_text(worker_log)
    finally:
        processes.stop_all()
        clean_redis(r, scope, queue)
        r.close()
        database.drop()
