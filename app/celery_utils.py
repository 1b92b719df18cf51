"""Celery, bound to a Flask app (Flask's ``examples/celery`` pattern).

``create_app`` calls ``celery_init_app``; tasks (``app.tasks``) use ``@shared_task`` and
run inside the app context. ``celery -A app.celery_utils worker|beat`` finds the instance
as this module's ``celery`` attribute, built lazily: importing this module creates no
Flask app and opens no connection.
"""

from __future__ import annotations

from collections.abc import Mapping

import redis.exceptions
import sqlalchemy.exc
from celery import Celery, Task
from flask import Flask

from engine import BufferUnavailable, StoreUnavailable

RESULT_EXPIRES_S = 3600
BROKER_POOL_LIMIT = 10
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


def beat_schedule(config: Mapping) -> dict:
    flush_s = config["COUNTERS_FLUSH_INTERVAL"]
    reconcile_s = config["COUNTERS_RECONCILE_INTERVAL"]
    return {
        "flush-counters": {
            "task": "app.tasks.flush_counters",
            "schedule": flush_s,
            # a flush that waited a whole interval is superseded by the next one
            "options": {"expires": flush_s},
        },
        "reconcile-counters": {
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
        "redbeat_lock_timeout": REDBEAT_LOCK_TIMEOUT_S,
        "beat_max_loop_interval": BEAT_MAX_LOOP_INTERVAL_S,
        "beat_schedule": beat_schedule(config),
    }
    return {**settings, **(config.get("CELERY") or {})}


def celery_init_app(app: Flask) -> Celery:
    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    celery = Celery(app.import_name, task_cls=FlaskTask, include=["app.tasks"])
    celery.config_from_object(celery_config(app.config))
    celery.set_default()
    app.extensions["celery"] = celery
    return celery


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
