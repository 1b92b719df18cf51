"""Configuration: defaults, then the environment, then ``create_app(test_config)``.

The site's own settings are the table below; the engine's ``COUNTERS_*`` are
``engine.settings.SETTINGS``. A setting with a parser is also an environment variable of
the same name. ``DATABASE_URL`` becomes ``SQLALCHEMY_DATABASE_URI`` (rewritten to the
psycopg2 driver); intervals are seconds.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from engine import settings as engine_settings
from engine.settings import Setting, parse_bool

MAX_CONTENT_LENGTH_BYTES = 1024 * 1024
LOCK_TIMEOUT_MIN_LOOPS = 3  # CELERY_REDBEAT_LOCK_TIMEOUT >= this many beat loops

SETTINGS: tuple[Setting, ...] = (
    Setting(
        "DATABASE_URL",
        "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres",
        str,
        "Postgres (postgres:// URLs are rewritten to psycopg2)",
    ),
    Setting(
        "DATABASE_PING_IDLE_S",
        5.0,
        float,
        "s; a pooled connection idle this long is pinged before use (0: every checkout)",
    ),
    Setting(
        "REDIS_URL",
        "redis://127.0.0.1:6379/0",
        str,
        "broker, result backend, RedBeat and (by default) the counter buffer",
    ),
    Setting(
        "ADMIN_TOKEN",
        None,
        str,
        "bearer token of /api/admin/*, and of /admin/dashboard's form; unset: both disabled",
    ),
    Setting(
        "SECRET_KEY",
        None,
        str,
        "signs the dashboard's session cookie; unset: derived from ADMIN_TOKEN (the same "
        "in every process)",
    ),
    Setting(
        "SESSION_COOKIE_SECURE",
        False,
        parse_bool,
        "1: the dashboard's session cookie travels over HTTPS only (set it behind TLS)",
    ),
    Setting("CELERY_TASK_DEFAULT_QUEUE", None, str, "the queue the tasks use (celery)"),
    Setting(
        "CELERY_BEAT_MAX_LOOP_INTERVAL",
        5.0,
        float,
        "s; a beat wakes at least this often and extends its RedBeat lock",
    ),
    Setting(
        "CELERY_REDBEAT_LOCK_TIMEOUT",
        30.0,
        float,
        "s; a standby beat takes over at most this long (plus one loop) after the active "
        f"one dies; at least {LOCK_TIMEOUT_MIN_LOOPS} beat loops",
    ),
    Setting(
        "PROXY_HOPS",
        0,
        int,
        "trusted reverse proxies in front of the app: the client address is the one the "
        "outermost of them saw (X-Forwarded-For); 0 = none, the peer address",
    ),
    Setting(
        "RATELIMIT_ENABLED",
        True,
        parse_bool,
        "Flask-Limiter's switch: 0 turns the abuse limits off (load tests, benchmarks)",
    ),
    Setting("LIMIT_SIGNUP", "20 per hour", str, "sign-ups per client address"),
    Setting("LIMIT_ACTIONS", "120 per minute", str, "likes, collects and shares per user"),
    Setting("LIMIT_COMMENTS", "30 per minute", str, "comments per user"),
    Setting("MAX_CONTENT_LENGTH", MAX_CONTENT_LENGTH_BYTES, None, "request bodies above: 413"),
    Setting("SQLALCHEMY_ENGINE_OPTIONS", {}, None, "passed to Flask-SQLAlchemy"),
    Setting("CELERY", {}, None, "Celery settings that override app.celery_utils' ones"),
)


def env_keys() -> list[str]:
    """Every variable the app reads: its own, then the engine's ``COUNTERS_*``."""
    return [s.key for s in (*SETTINGS, *engine_settings.SETTINGS) if s.parse is not None]


def sqlalchemy_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` (as hosting providers hand them out) -> psycopg2."""
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+psycopg2://" + url[len(scheme) :]
    return url


def derived_secret(admin_token: str) -> str:
    """A session-signing key every process derives alike from the admin token (a new
    token then also signs every dashboard session out)."""
    return hmac.new(admin_token.encode(), b"session-secret", hashlib.sha256).hexdigest()


def load(environ: Mapping[str, str], test_config: Mapping | None = None) -> dict:
    config = {
        **engine_settings.defaults(SETTINGS),
        **engine_settings.defaults(),
        **engine_settings.from_environ(environ, SETTINGS),
        **engine_settings.from_environ(environ),
        **(test_config or {}),
    }
    config["SQLALCHEMY_DATABASE_URI"] = sqlalchemy_url(config["DATABASE_URL"])
    config["COUNTERS_REDIS_URL"] = config["COUNTERS_REDIS_URL"] or config["REDIS_URL"]
    if not config["SECRET_KEY"] and config["ADMIN_TOKEN"]:
        config["SECRET_KEY"] = derived_secret(config["ADMIN_TOKEN"])
    engine_settings.validate(config)
    if config["PROXY_HOPS"] < 0:
        raise ValueError("PROXY_HOPS must be 0 (no proxy) or the number of trusted proxies")
    if config["DATABASE_PING_IDLE_S"] < 0:
        raise ValueError("DATABASE_PING_IDLE_S must be 0 (always ping) or more seconds")
    loop_s, lock_s = config["CELERY_BEAT_MAX_LOOP_INTERVAL"], config["CELERY_REDBEAT_LOCK_TIMEOUT"]
    if loop_s <= 0 or lock_s < LOCK_TIMEOUT_MIN_LOOPS * loop_s:
        raise ValueError(
            "CELERY_REDBEAT_LOCK_TIMEOUT must be at least "
            f"{LOCK_TIMEOUT_MIN_LOOPS} x CELERY_BEAT_MAX_LOOP_INTERVAL (a positive number of s)"
        )
    return config
