"""Celery, bound to a Flask app (Flask's ``examples/celery`` pattern).

``create_app`` calls ``celery_init_app``; tasks (``app.tasks``) use ``@shared_task`` and
run inside the app context. ``celery -A app.celery_utils worker|beat`` finds the instance
as this module's ``celery`` attribute, built lazily: importing this module creates no
Flask app and opens no connection.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import datetime, timezone

import redis.exceptions
import sqlalchemy.exc
from celery import Celery, Task
from celery.signals import after_setup_logger
from flask import Flask

from engine import BufferUnavailable, StoreUnavailable

from . import schedules

RESULT_EXPIRES_S = 3600
BROKER_POOL_LIMIT = 10
# The beat's loop and lock: CELERY_BEAT_MAX_LOOP_INTERVAL, CELERY_REDBEAT_LOCK_TIMEOUT
# (app.config), these when a config lacks them.
BEAT_MAX_LOOP_INTERVAL_S = 5
# RedBeat's lock must outlive a beat loop by far, or a second beat could take over mid-loop.
REDBEAT_LOCK_TIMEOUT_S = 30

# Transient failures: retried with exponential backoff and jitter, up to 60 s apart.
RETRY_KWARGS = {
    "autoretry_for": (
        sqlalchemy.exc.OperationalError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        StoreUnavailable,
        BufferUnavailable,
    ),
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 5,
}


def beat_schedule(config: Mapping, stored: Mapping[str, float] | None = None) -> dict:
    """The flush and reconcile entries; ``stored`` intervals (set at runtime, see
    ``app.schedules``) win over the configured ones."""
    stored = stored or {}
    flush_s = stored.get("flush", config["COUNTERS_FLUSH_INTERVAL"])
    reconcile_s = stored.get("reconcile", config["COUNTERS_RECONCILE_INTERVAL"])
    return {
        schedules.FLUSH_ENTRY: {
            "task": "app.tasks.flush_counters",
            "schedule": flush_s,
            # a flush that waited a whole interval is superseded by the next one
            "options": {"expires": flush_s},
        },
        schedules.RECONCILE_ENTRY: {
            "task": "app.tasks.reconcile_counters",
            "schedule": reconcile_s,
            "options": {"expires": reconcile_s},
        },
    }


def celery_config(config: Mapping) -> dict:
    """Celery settings from the app config; ``config["CELERY"]`` overrides any of them."""
    url = config["REDIS_URL"]
    settings = {
        "broker_url": url,
        "result_backend": url,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "timezone": "UTC",
        "enable_utc": True,
        "result_expires": RESULT_EXPIRES_S,
        "broker_pool_limit": BROKER_POOL_LIMIT,
        "broker_connection_retry_on_startup": True,
        # a task is acknowledged after it ran: a killed worker's task is redelivered
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "beat_scheduler": "redbeat.RedBeatScheduler",
        "redbeat_redis_url": url,
        # one beat (lock, schedule) per app, as the counter keys are per prefix
        "redbeat_key_prefix": f"redbeat:{config['COUNTERS_PREFIX']}:",
        "redbeat_lock_timeout": config.get("CELERY_REDBEAT_LOCK_TIMEOUT", REDBEAT_LOCK_TIMEOUT_S),
        "beat_max_loop_interval": config.get(
            "CELERY_BEAT_MAX_LOOP_INTERVAL", BEAT_MAX_LOOP_INTERVAL_S
        ),
        "beat_schedule": beat_schedule(config),
    }
    if config.get("CELERY_TASK_DEFAULT_QUEUE"):
        settings["task_default_queue"] = config["CELERY_TASK_DEFAULT_QUEUE"]
    return {**settings, **(config.get("CELERY") or {})}


def celery_init_app(app: Flask) -> Celery:
    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    celery = Celery(app.import_name, task_cls=FlaskTask, include=["app.tasks"])
    celery.config_from_object(celery_config(app.config))
    if "beat_schedule" not in (app.config.get("CELERY") or {}):
        celery.on_after_configure.connect(_use_stored_intervals(app.config), weak=False)
    after_setup_logger.connect(_json_lines_for_structured_logs, weak=False, dispatch_uid=__name__)
    celery.set_default()
    app.extensions["celery"] = celery
    return celery


def _use_stored_intervals(config: Mapping):
    """A handler of ``on_after_configure``: Celery's config is loaded lazily (a beat
    starting, a worker, a web process sending its first task), and only then is Redis
    asked for the intervals set at runtime; a beat re-saves this schedule at its start."""

    def handler(sender: Celery, source, **kwargs) -> None:
        stored = schedules.read_stored(sender)
        if stored:
            source.beat_schedule = beat_schedule(config, stored)

    return handler


# Loggers whose records are JSON objects (a flush batch, a flush, a reconcile).
STRUCTURED_LOGGERS = ("engine", "app.maintenance")


class JsonLineFormatter(logging.Formatter):
    """Records of ``STRUCTURED_LOGGERS`` as one JSON object per line (time, level,
    logger, then the record's own JSON fields); any other record by ``fallback``."""

    def __init__(self, fallback: logging.Formatter | None = None) -> None:
        super().__init__()
        self.fallback = fallback or logging.Formatter()

    @staticmethod
    def structured(name: str) -> bool:
        return any(name == n or name.startswith(n + ".") for n in STRUCTURED_LOGGERS)

    def format(self, record: logging.LogRecord) -> str:
        if not self.structured(record.name):
            return self.fallback.format(record)
        message = record.getMessage()
        try:
            fields = json.loads(message)
        except ValueError:
            fields = None
        if not isinstance(fields, dict):
            fields = {"message": message}
        when = datetime.fromtimestamp(record.created, timezone.utc)
        line = {
            "ts": when.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "pid": record.process,
            **fields,
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)  # json escapes newlines: one line


def _json_lines_for_structured_logs(logger: logging.Logger | None = None, **kwargs) -> None:
    """``after_setup_logger``: Celery (worker, beat) has set up its handlers on the root
    logger; the structured records go through the same handlers, as JSON lines."""
    for handler in (logger or logging.getLogger()).handlers:
        if not isinstance(handler.formatter, JsonLineFormatter):
            handler.setFormatter(JsonLineFormatter(handler.formatter))


_celery: Celery | None = None


def get_celery_app() -> Celery:
    """The Celery of a Flask app built from the environment, on first use."""
    global _celery
    if _celery is None:
        from . import create_app

        _celery = create_app().extensions["celery"]
    return _celery


def __getattr__(name: str):
    # `celery -A app.celery_utils` looks for `.app`, then `.celery`
    if name in ("celery", "celery_app"):
        return get_celery_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
