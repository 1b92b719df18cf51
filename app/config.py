"""Configuration: defaults, then the environment, then ``create_app(test_config)``.

Every key is also an environment variable of the same name. ``DATABASE_URL`` becomes
``SQLALCHEMY_DATABASE_URI`` (rewritten to the psycopg2 driver); intervals are seconds.
"""

from __future__ import annotations

from collections.abc import Mapping

from engine import DEFAULT_SHARDS, FLUSH_THREADS

DEFAULT_DATABASE_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
MAX_CONTENT_LENGTH_BYTES = 1024 * 1024
LOCK_TIMEOUT_MIN_LOOPS = 3  # CELERY_REDBEAT_LOCK_TIMEOUT >= this many beat loops

DEFAULTS: dict = {
    "DATABASE_URL": DEFAULT_DATABASE_URL,
    "REDIS_URL": DEFAULT_REDIS_URL,
    "ADMIN_TOKEN": None,
    "COUNTERS_FLUSH_INTERVAL": 2.0,  # s
    "COUNTERS_RECONCILE_INTERVAL": 3600.0,  # s
    "COUNTERS_SHARDS": DEFAULT_SHARDS,
    "COUNTERS_PREFIX": "ctr",
    "COUNTERS_REDIS_URL": None,  # None: the counters share REDIS_URL
    "COUNTERS_REDIS_CLUSTER": False,
    # Shards per ``flush_shards`` task: the scheduled flush sends one task per group of
    # dirty shards, so that many workers flush at once (see docs/scaling.md).
    "COUNTERS_FLUSH_GROUP_SIZE": 4,
    # ms; > 0 turns on the coalescing of view beacons in the web process (app/coalesce.py):
    # faster, but a hard kill loses up to this long of acknowledged views. Off: 0.
    "COUNTERS_COALESCE_MS": 0.0,
    # Shards one flush call applies at once, each on its own database connection.
    "COUNTERS_FLUSH_THREADS": FLUSH_THREADS,
    "CELERY_TASK_DEFAULT_QUEUE": None,  # None: Celery's own default queue, "celery"
    # A beat wakes at least this often (s), and extends its RedBeat lock each time.
    "CELERY_BEAT_MAX_LOOP_INTERVAL": 5.0,
    # s; a standby beat takes over at most this long (plus one loop) after the active
    # one dies. It must outlive a beat loop by far, or a second beat could take over
    # mid-loop: at least LOCK_TIMEOUT_MIN_LOOPS loops.
    "CELERY_REDBEAT_LOCK_TIMEOUT": 30.0,
    "MAX_CONTENT_LENGTH": MAX_CONTENT_LENGTH_BYTES,
    # s; a pooled connection idle this long is pinged before use (app/dbpool.py)
    "DATABASE_PING_IDLE_S": 5.0,
    "SQLALCHEMY_ENGINE_OPTIONS": {},
    "CELERY": {},  # Celery settings that override the ones built in app.celery_utils
}

PARSERS = {
    "COUNTERS_FLUSH_INTERVAL": float,
    "DATABASE_PING_IDLE_S": float,
    "COUNTERS_RECONCILE_INTERVAL": float,
    "COUNTERS_SHARDS": int,
    "COUNTERS_FLUSH_GROUP_SIZE": int,
    "COUNTERS_FLUSH_THREADS": int,
    "COUNTERS_COALESCE_MS": float,
    "CELERY_BEAT_MAX_LOOP_INTERVAL": float,
    "CELERY_REDBEAT_LOCK_TIMEOUT": float,
    "COUNTERS_REDIS_CLUSTER": lambda v: v.strip().lower() in ("1", "true", "yes", "on"),
}

ENV_KEYS = [
    "DATABASE_URL",
    "DATABASE_PING_IDLE_S",
    "REDIS_URL",
    "ADMIN_TOKEN",
    "COUNTERS_FLUSH_INTERVAL",
    "COUNTERS_RECONCILE_INTERVAL",
    "COUNTERS_SHARDS",
    "COUNTERS_PREFIX",
    "COUNTERS_REDIS_URL",
    "COUNTERS_REDIS_CLUSTER",
    "COUNTERS_FLUSH_GROUP_SIZE",
    "COUNTERS_FLUSH_THREADS",
    "COUNTERS_COALESCE_MS",
    "CELERY_TASK_DEFAULT_QUEUE",
    "CELERY_BEAT_MAX_LOOP_INTERVAL",
    "CELERY_REDBEAT_LOCK_TIMEOUT",
]


def sqlalchemy_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` (as hosting providers hand them out) -> psycopg2."""
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+psycopg2://" + url[len(scheme) :]
    return url


def from_environ(environ: Mapping[str, str]) -> dict:
    out = {}
    for key in ENV_KEYS:
        value = environ.get(key)
        if value is None or value == "":
            continue
        try:
            out[key] = PARSERS.get(key, str)(value)
        except ValueError:
            raise ValueError(f"{key}={value!r} is not a valid value") from None
    return out


def load(environ: Mapping[str, str], test_config: Mapping | None = None) -> dict:
    config = {**DEFAULTS, **from_environ(environ), **(test_config or {})}
    config["SQLALCHEMY_DATABASE_URI"] = sqlalchemy_url(config["DATABASE_URL"])
    config["COUNTERS_REDIS_URL"] = config["COUNTERS_REDIS_URL"] or config["REDIS_URL"]
    if config["COUNTERS_FLUSH_INTERVAL"] <= 0 or config["COUNTERS_RECONCILE_INTERVAL"] <= 0:
        raise ValueError("COUNTERS_*_INTERVAL must be positive (seconds)")
    if config["DATABASE_PING_IDLE_S"] < 0:
        raise ValueError("DATABASE_PING_IDLE_S must be 0 (always ping) or more seconds")
    if config["COUNTERS_FLUSH_GROUP_SIZE"] < 1:
        raise ValueError("COUNTERS_FLUSH_GROUP_SIZE must be at least 1 (shards per task)")
    if config["COUNTERS_COALESCE_MS"] < 0:
        raise ValueError("COUNTERS_COALESCE_MS must be 0 (off) or a positive number of ms")
    if config["COUNTERS_FLUSH_THREADS"] < 1:
        raise ValueError("COUNTERS_FLUSH_THREADS must be at least 1 (shards flushed at once)")
    loop_s, lock_s = config["CELERY_BEAT_MAX_LOOP_INTERVAL"], config["CELERY_REDBEAT_LOCK_TIMEOUT"]
    if loop_s <= 0 or lock_s < LOCK_TIMEOUT_MIN_LOOPS * loop_s:
        raise ValueError(
            "CELERY_REDBEAT_LOCK_TIMEOUT must be at least "
            f"{LOCK_TIMEOUT_MIN_LOOPS} x CELERY_BEAT_MAX_LOOP_INTERVAL (a positive number of s)"
        )
    return config
