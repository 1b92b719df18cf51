"""Celery side of the engine (``pip install 'counter-engine[celery]'``): the flush,
fan-out and reconcile tasks under stable names, their retry policy, and the RedBeat
entries that run them, with intervals changeable at runtime.

    celery = Celery(...)                       # or Flask's celery_init_app(app)
    init_celery(celery, counters, app.config)  # counters: a FlaskCounters or a Counters

Tasks: ``counters.flush`` (scheduled; fans out to ``counters.flush_shards`` when many
shards are dirty), ``counters.flush_shards``, ``counters.reconcile`` (scheduled; also
``.delay(names, ids)`` for a targeted recount), ``counters.rebuild_index``,
``counters.retain`` (scheduled: time-bucket retention and trending windows).

The site configures the beat: ``beat_scheduler = "redbeat.RedBeatScheduler"``,
``redbeat_redis_url`` and a ``redbeat_key_prefix`` of its own (the runtime intervals live
in RedBeat's keys). The extra brings no broker transport: with a Redis broker, install
``celery[redis]`` too, or the worker cannot load kombu's Redis transport.
"""

from __future__ import annotations

from collections.abc import Mapping

from celery import Celery
from celery.signals import after_setup_logger

from .. import settings
from ..logs import use_json_lines
from . import schedule
from .tasks import RETRY_KWARGS, register_tasks

__all__ = ["RETRY_KWARGS", "init_celery", "register_tasks", "schedule"]


def init_celery(celery: Celery, counters, config: Mapping | None = None) -> dict:
    """Register the engine's tasks on ``celery`` and add the flush and reconcile entries
    to its beat schedule (RedBeat); returns the tasks by name.

    ``counters`` is a ``FlaskCounters`` (tasks then use the Counters of the app whose
    context the task runs in, as Flask's ``FlaskTask`` provides) or an ``engine.Counters``.
    ``config`` holds the ``COUNTERS_*`` settings (defaults for any missing); a
    ``beat_schedule`` entry the site already has under the same name is kept.
    """
    config = {**settings.defaults(), **(config or {})}
    settings.validate(config)
    tasks = register_tasks(celery, counters, config)
    configure = schedule.configure_beat(config)
    if celery.configured:  # too late for the signal: add the entries now
        configure(celery, celery.conf)
    else:
        celery.on_after_configure.connect(configure, weak=False)
    after_setup_logger.connect(_json_lines, weak=False, dispatch_uid=__name__)
    return tasks


def _json_lines(logger=None, **kwargs) -> None:
    """``after_setup_logger``: the engine's records go through the worker's and beat's
    handlers as JSON lines."""
    use_json_lines(logger)
