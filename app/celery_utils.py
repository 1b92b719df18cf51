"""Celery, bound to a Flask app (Flask's ``examples/celery`` pattern), with the counter
engine's tasks and RedBeat schedule (``engine.celery``).

``create_app`` calls ``celery_init_app``; the site's own tasks (``app.tasks``) use
``@shared_task`` and run inside the app context. ``celery -A app.celery_utils
worker|beat`` finds the instance as this module's ``celery`` attribute, built lazily:
importing this module creates no Flask app and opens no connection.
"""

from __future__ import annotations

from collections.abc import Mapping

from celery import Celery, Task
from flask import Flask

from engine.celery import init_celery

from .counters import counters

RESULT_EXPIRES_S = 3600
BROKER_POOL_LIMIT = 10


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
        # one beat (lock, schedule) per site, as the counter keys are per scope
        "redbeat_key_prefix": f"redbeat:{config['COUNTERS_SCOPE']}:",
        "redbeat_lock_timeout": config["CELERY_REDBEAT_LOCK_TIMEOUT"],
        "beat_max_loop_interval": config["CELERY_BEAT_MAX_LOOP_INTERVAL"],
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
    init_celery(celery, counters, app.config)
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
