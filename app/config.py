"""Configuration: defaults, then the environment, then ``create_app(test_config)``.

Every key is also an environment variable of the same name: the site's own keys below,
and every ``COUNTERS_*`` setting of the engine (``engine.settings``, whose defaults the
extension fills in). ``DATABASE_URL`` becomes ``SQLALCHEMY_DATABASE_URI`` (rewritten to
the psycopg2 driver); intervals are seconds.
"""

from __future__ import annotations

from collections.abc import Mapping

from engine import settings as engine_settings

DEFAULT_DATABASE_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
MAX_CONTENT_LENGTH_BYTES = 1024 * 1024
LOCK_TIMEOUT_MIN_LOOPS = 3  # CELERY_REDBEAT_LOCK_TIMEOUT >= this many beat loops

DEFAULTS: dict = {
    "DATABASE_URL": DEFAULT_DATABASE_URL,
    "REDIS_URL": DEFAULT_REDIS_URL,
    "ADMIN_TOKEN": None,
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
    "DATABASE_PING_IDLE_S": float,
    "CELERY_BEAT_MAX_LOOP_INTERVAL": float,
    "CELERY_REDBEAT_LOCK_TIMEOUT": float,
}

ENV_KEYS = [
    "DATABASE_URL",
    "DATABASE_PING_IDLE_S",
    "REDIS_URL",
    "ADMIN_TOKEN",
    "CELERY_TASK_DEFAULT_QUEUE",
    "CELERY_BEAT_MAX_LOOP_INTERVAL",
    "CELERY_REDBEAT_LOCK_TIMEOUT",
]


def env_keys() -> list[str]:
    """Every variable the app reads: its own, then the engine's ``COUNTERS_*``."""
    return [*ENV_KEYS, *engine_settings.BY_KEY]


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
    return {**out, **engine_settings.from_environ(environ)}


def load(environ: Mapping[str, str], test_config: Mapping | None = None) -> dict:
    config = {
        **DEFAULTS,
        **engine_settings.defaults(),
        **from_environ(environ),
        **(test_config or {}),
    }
    config["SQLALCHEMY_DATABASE_URI"] = sqlalchemy_url(config["DATABASE_URL"])
    config["COUNTERS_REDIS_URL"] = config["COUNTERS_REDIS_URL"] or config["REDIS_URL"]
    engine_settings.validate(config)
    if config["DATABASE_PING_IDLE_S"] < 0:
        raise ValueError("DATABASE_PING_IDLE_S must be 0 (always ping) or more seconds")
    loop_s, lock_s = config["CELERY_BEAT_MAX_LOOP_INTERVAL"], config["CELERY_REDBEAT_LOCK_TIMEOUT"]
    if loop_s <= 0 or lock_s < LOCK_TIMEOUT_MIN_LOOPS * loop_s:
        raise ValueError(
            "CELERY_REDBEAT_LOCK_TIMEOUT must be at least "
            f"{LOCK_TIMEOUT_MIN_LOOPS} x CELERY_BEAT_MAX_LOOP_INTERVAL (a positive number of s)"
        )
    return config
