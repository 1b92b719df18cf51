"""Where the benchmarks run: a scratch Postgres database and one Redis db of their own.

``BENCH_DATABASE_URL`` (else ``DATABASE_URL``, else the local server) names a Postgres
on which a database ``ctrbench_<random>`` is created and, at the end, dropped.
``BENCH_REDIS_URL`` (else ``REDIS_URL``, else the local server) names the Redis; only
database ``BENCH_REDIS_DB`` (default 13) is used, flushed before and after.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass, field
from importlib import metadata

import redis
import sqlalchemy as sa

from harness.scratch import ScratchDatabase, scratch_name
from harness.servers import DEFAULT_PG, DEFAULT_REDIS, from_env
from harness.urls import with_database, with_redis_db

DEFAULT_REDIS_DB = 13

PACKAGES = (
    "flask",
    "flask-sqlalchemy",
    "sqlalchemy",
    "psycopg2-binary",
    "redis",
    "hiredis",
    "celery",
    "celery-redbeat",
    "gunicorn",
    "matplotlib",
)


@dataclass
class BenchEnv:
    """The servers and names one benchmark run owns; use as a context manager."""

    admin_pg_url: str = field(
        default_factory=lambda: from_env("BENCH_DATABASE_URL", "DATABASE_URL", default=DEFAULT_PG)
    )
    redis_base_url: str = field(
        default_factory=lambda: from_env("BENCH_REDIS_URL", "REDIS_URL", default=DEFAULT_REDIS)
    )
    redis_db: int = field(
        default_factory=lambda: int(os.environ.get("BENCH_REDIS_DB", DEFAULT_REDIS_DB))
    )
    db_name: str = field(default_factory=lambda: scratch_name("ctrbench"))

    @property
    def database_url(self) -> str:
        return with_database(self.admin_pg_url, self.db_name)

    @property
    def redis_url(self) -> str:
        return with_redis_db(self.redis_base_url, self.redis_db)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def sql(self, **kw) -> sa.Engine:
        return sa.create_engine(self.database_url, **kw)

    def __enter__(self) -> BenchEnv:
        self._scratch = ScratchDatabase(self.admin_pg_url, self.db_name)
        with self.redis() as r:
            r.flushdb()
        return self

    def __exit__(self, *exc) -> None:
        with self.redis() as r:
            r.flushdb()
        self._scratch.drop()

    def describe(self) -> dict:
        """Machine and versions, for the results file."""
        with self.redis() as r:
            info = r.info("server")
            listpack = r.config_get("hash-max-listpack-entries")
        admin = sa.create_engine(self.admin_pg_url)
        with admin.connect() as conn:
            pg_version = conn.execute(sa.text("SHOW server_version")).scalar_one()
        admin.dispose()
        packages = {}
        for name in PACKAGES:
            try:
                packages[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                packages[name] = None
        return {
            "machine": {
                "cores": os.cpu_count(),
                "platform": platform.platform(),
                "processor": platform.machine(),
                "memory_mb": _memory_mb(),
            },
            "versions": {
                "python": platform.python_version(),
                "redis_server": info.get("redis_version"),
                "postgres": pg_version,
                "wrk": wrk_version(),
                "packages": packages,
            },
            "redis_config": {k: int(v) for k, v in listpack.items()},
        }


def _memory_mb() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        return None
    return None


def wrk_version() -> str | None:
    path = shutil.which("wrk")
    if path is None:
        return None
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    first = (out.stdout or out.stderr).splitlines()
    return first[0].split(" [")[0] if first else "unknown"
