"""docker-compose.yml names real entry points and wires the stack as the contract says.

No Docker engine is needed: the file is parsed with PyYAML, each command's entry
point is resolved in this environment, and the migrate command is run for real
against a scratch database. ``docker compose config`` validates the schema where a
compose client is installed.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys

import pytest
import sqlalchemy as sa
import yaml

from tests.servers import ROOT, redis_url

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = ["migrate", "web", "worker", "beat", "flower"]
RUNTIME_SERVICES = ["web", "worker", "beat"]
APP_ENV = ["DATABASE_URL", "REDIS_URL", "ADMIN_TOKEN", "COUNTERS_FLUSH_INTERVAL"]


def command(service: str) -> list[str]:
    cmd = SERVICES[service]["command"]
    return cmd.split() if isinstance(cmd, str) else list(cmd)


def option(cmd: list[str], *names: str) -> str:
    for i, arg in enumerate(cmd):
        if arg in names:
            return cmd[i + 1]
        for name in names:
            if name.startswith("--") and arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    raise AssertionError(f"{names} not in {cmd}")


def interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with an empty environment."""
    return re.sub(r"\$\{\w+:?-([^}]*)\}", r"\1", str(value))


def test_every_service_is_defined():
    assert set(SERVICES) == {"postgres", "redis", *APP_SERVICES}


def test_web_command_is_gunicorn_on_create_app():
    cmd = command("web")
    assert cmd[0] == "gunicorn"
    module, _, call = cmd[1].partition(":")
    assert call == "create_app()"
    assert callable(importlib.import_module(module).create_app)
    assert option(cmd, "-b", "--bind") == "0.0.0.0:8000"
    assert int(option(cmd, "-w", "--workers")) >= 2


@pytest.mark.parametrize("service", ["worker", "beat", "flower"])
def test_celery_services_load_the_app_celery_instance(service):
    cmd = command(service)
    assert cmd[0] == "celery"
    assert service in cmd  # the subcommand: worker, beat or flower
    target = option(cmd, "-A", "--app")
    assert target == "app.celery_utils"
    # In a subprocess: building the Celery app makes it the process-wide default.
    check = (
        "from celery import Celery; from celery.app.utils import find_app; "
        "import app.celery_utils as m; "
        f"found = find_app({target!r}); "
        "assert isinstance(found, Celery) and found is m.celery_app, found; "
        "print(found.main)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", check],
        cwd=ROOT,
        env={**os.environ, "FLASK_SKIP_DOTENV": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_beat_uses_redbeat_scheduler():
    from celery.utils.imports import symbol_by_name
    from redbeat import RedBeatScheduler

    cmd = command("beat")
    assert symbol_by_name(option(cmd, "-S", "--scheduler")) is RedBeatScheduler


def test_flower_is_installed_for_its_service():
    importlib.import_module("flower")
    assert option(command("flower"), "--port") == "5555"


def test_migrate_command_is_flask_db_upgrade():
    cmd = command("migrate")
    assert cmd == ["flask", "--app", "app", "db", "upgrade"]
    assert SERVICES["migrate"].get("restart") in ("no", None)


def flask_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flask", *args],
        cwd=ROOT,
        env={**os.environ, "FLASK_SKIP_DOTENV": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_flask_cli_has_db_group_on_the_app():
    proc = flask_cli("--app", "app", "db", "--help")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "upgrade" in proc.stdout


def test_migrate_command_runs_against_a_fresh_database(database_factory):
    db = database_factory("compose")
    proc = flask_cli(
        *command("migrate")[1:], env={"DATABASE_URL": db.url, "REDIS_URL": redis_url(15)}
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    engine = sa.create_engine(db.url)
    try:
        tables = set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"users", "posts", "articles", "user_actions"} <= tables


def test_redis_keeps_deltas_in_an_append_only_file():
    cmd = " ".join(command("redis"))
    assert SERVICES["redis"]["image"].startswith("redis:7")
    assert re.search(r"--appendonly yes\b", cmd)
    assert re.search(r"--appendfsync everysec\b", cmd)
    assert any(v.endswith(":/data") for v in SERVICES["redis"]["volumes"])
    assert "redis-cli" in " ".join(SERVICES["redis"]["healthcheck"]["test"])
    assert "ping" in " ".join(SERVICES["redis"]["healthcheck"]["test"])


def test_postgres_has_a_readiness_healthcheck():
    pg = SERVICES["postgres"]
    assert pg["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert pg["volumes"], "data must survive a container restart"


def test_startup_order_waits_for_healthy_servers_and_finished_migration():
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for service in RUNTIME_SERVICES:
        deps = SERVICES[service]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", service
        assert deps["redis"]["condition"] == "service_healthy", service


@pytest.mark.parametrize("service", ["migrate", *RUNTIME_SERVICES])
def test_app_services_get_the_settings_the_app_reads(service):
    from app.config import env_keys

    env = SERVICES[service]["environment"]
    assert set(APP_ENV) <= set(env), service
    assert set(env) <= set(env_keys()), f"{service}: variables the app does not read"
    url = sa.engine.make_url(interpolate(env["DATABASE_URL"]))
    assert url.drivername == "postgresql+psycopg2"
    assert url.host == "postgres"
    assert url.username == SERVICES["postgres"]["environment"]["POSTGRES_USER"]
    assert url.password == SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert url.database == SERVICES["postgres"]["environment"]["POSTGRES_DB"]
    assert interpolate(env["REDIS_URL"]).startswith("redis://redis:6379/")
    assert float(interpolate(env["COUNTERS_FLUSH_INTERVAL"])) > 0


def test_dockerfile_installs_the_project():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", text, re.M)
    assert re.search(r"pip install '?\.(\[[\w,]*ops[\w,]*\])?'?", text)
    for path in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for src in path.split():
            assert (ROOT / src).exists(), f"Dockerfile copies missing {src}"


def _compose_client() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_compose_client_accepts_the_file():
    client = _compose_client()
    if client is None:
        pytest.skip("no docker compose client installed (optional; PyYAML checks above)")
    proc = subprocess.run(
        [*client, "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
