"""The RedBeat entries that flush and reconcile the counters, and their runtime intervals.

RedBeat keeps each beat entry in Redis (``<prefix><name>``, a ``definition`` and a
``meta`` field, plus its next run time in the ``<prefix>:schedule`` sorted set). A
running beat re-reads due entries from there at every tick (at most
``beat_max_loop_interval`` apart), so an entry saved with a new interval is picked up
without a restart. A beat that starts re-saves its static ``beat_schedule`` over the
entries, so an interval set at runtime is also kept in the hash
``<prefix>:counters-intervals``, read when Celery is configured (:func:`follow_stored`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

import redis
from celery import Celery
from celery.schedules import schedule as every
from redbeat.schedulers import RedBeatSchedulerEntry, ensure_conf, get_redis

from ..intervals import KINDS, BadInterval, validate

log = logging.getLogger(__name__)

FLUSH_TASK = "counters.flush"
RECONCILE_TASK = "counters.reconcile"
RETENTION_TASK = "counters.retain"
INTERVALS_KEY_SUFFIX = ":counters-intervals"
READ_TIMEOUT_S = 2.0


def beat_schedule(config: Mapping, stored: Mapping[str, float] | None = None) -> dict:
    """The flush, reconcile and retention entries at ``config``'s intervals
    (COUNTERS_FLUSH_INTERVAL, COUNTERS_RECONCILE_INTERVAL, COUNTERS_RETENTION_INTERVAL);
    ``stored`` intervals (set at runtime) win. A run that waited a whole interval
    expires: the next one supersedes it."""
    stored = stored or {}
    entries = {}
    jobs = (("flush", FLUSH_TASK), ("reconcile", RECONCILE_TASK), ("retention", RETENTION_TASK))
    for kind, task in jobs:
        name, key = KINDS[kind]
        seconds = stored.get(kind, config[key])
        entries[name] = {"task": task, "schedule": seconds, "options": {"expires": seconds}}
    return entries


def configure_beat(config: Mapping):
    """A handler of ``Celery.on_after_configure`` that adds the flush and reconcile
    entries to the beat schedule, at the intervals set at runtime if any (an entry the
    site's own schedule has under the same name wins). Celery loads its config lazily (a
    beat starting, a worker, a web process sending its first task), and only then is
    Redis asked; a beat re-saves the schedule at its start, so runtime intervals
    survive its restart."""

    def handler(sender: Celery, source, **kwargs) -> None:
        entries = beat_schedule(config, read_stored(sender))
        source.beat_schedule = {**entries, **(source.beat_schedule or {})}

    return handler


def intervals_key(celery: Celery) -> str:
    return ensure_conf(celery).key_prefix + INTERVALS_KEY_SUFFIX


def _parse_stored(raw: Mapping) -> dict[str, float]:
    out = {}
    for kind, value in raw.items():
        kind = kind.decode() if isinstance(kind, bytes) else kind
        try:
            out[kind] = validate(kind, float(value))
        except (BadInterval, ValueError):
            log.warning("ignoring stored %s interval %r", kind, value)
    return out


def read_stored(celery: Celery) -> dict[str, float]:
    """Intervals set at runtime, ``{kind: seconds}``; ``{}`` when Redis cannot tell.

    Called when Celery is configured (a beat starting, a worker, a web process sending
    its first task), so it uses its own short-lived client with timeouts and never fails:
    without Redis there is no beat to schedule anyway.
    """
    conf = ensure_conf(celery)
    client = redis.Redis.from_url(
        conf.redis_url, socket_connect_timeout=READ_TIMEOUT_S, socket_timeout=READ_TIMEOUT_S
    )
    try:
        return _parse_stored(client.hgetall(intervals_key(celery)))
    except redis.exceptions.RedisError as exc:
        log.warning("could not read the stored counter schedule, using the config: %s", exc)
        return {}
    finally:
        client.close()


def _entry(celery: Celery, name: str) -> RedBeatSchedulerEntry | None:
    key = RedBeatSchedulerEntry.generate_key(celery, name)
    try:
        return RedBeatSchedulerEntry.from_key(key, app=celery)
    except KeyError:
        return None


def _iso(when: datetime | None) -> str | None:
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def next_run(entry: RedBeatSchedulerEntry) -> datetime | None:
    """When beat will send the entry next; None if never again.

    Not RedBeat's ``due_at``: it adds the time left (counted from now) to the last run,
    which is early by the time elapsed since that run.
    """
    if entry.last_run_at is None:
        return entry.default_now()
    remaining = entry.schedule.remaining_estimate(entry.last_run_at)
    if remaining is None:
        return None
    return entry.default_now() + max(remaining, timedelta(0))


def _describe_entry(kind: str, name: str, entry, config: Mapping, stored: dict) -> dict:
    configured = float(config[KINDS[kind][1]])
    out = {
        "name": name,
        "kind": kind,
        "source": "runtime" if kind in stored else "config",
        "configured_interval_s": configured,
        "in_redis": entry is not None,
    }
    if entry is None:  # no beat has saved it yet: what a beat would save now
        interval = stored.get(kind, configured)
        return {
            **out,
            "task": None,
            "interval_s": interval,
            "expires_s": interval,
            "enabled": None,
            "last_run_at": None,
            "next_run_at": None,
            "total_run_count": 0,
        }
    run_every = getattr(entry.schedule, "run_every", None)
    return {
        **out,
        "task": entry.task,
        "interval_s": run_every.total_seconds() if run_every is not None else None,
        "expires_s": (entry.options or {}).get("expires"),
        "enabled": bool(entry.enabled),
        "last_run_at": _iso(entry.last_run_at),
        "next_run_at": _iso(next_run(entry)),
        "total_run_count": entry.total_run_count or 0,
    }


def describe(celery: Celery, config: Mapping) -> dict:
    """The flush and reconcile entries as RedBeat holds them, with their next run.

    ``flush_interval`` / ``reconcile_interval`` are the intervals in force (seconds).
    """
    ensure_conf(celery)
    client = get_redis(celery)
    stored = _parse_stored(client.hgetall(intervals_key(celery)))
    entries = [
        _describe_entry(kind, name, _entry(celery, name), config, stored)
        for kind, (name, _) in KINDS.items()
    ]
    return {
        **{f"{e['kind']}_interval": e["interval_s"] for e in entries},
        "entries": entries,
    }


def _save_entry(celery: Celery, name: str, seconds: float) -> None:
    """Give the RedBeat entry ``name`` a new interval, keeping its last run.

    RedBeat's ``save()`` rewrites the definition, keeps ``meta`` (the last run) and
    re-scores the entry from it, so a shorter interval that is already overdue runs at
    the next tick. A beat that reserves the entry in the same instant scores it once
    more from the old interval; the new one applies from the run after.
    """
    entry = _entry(celery, name)
    if entry is None:  # no beat saved it yet: save what a beat would, with the new interval
        static = celery.conf.beat_schedule[name]
        entry = RedBeatSchedulerEntry(
            name=name,
            task=static["task"],
            schedule=static["schedule"],
            options=dict(static.get("options") or {}),
            app=celery,
        )
    entry.schedule = every(timedelta(seconds=seconds), app=celery)
    # a run that waited a whole interval is superseded by the next one
    entry.options = {**(entry.options or {}), "expires": seconds}
    entry.save()


def set_interval(celery: Celery, kind: str, seconds) -> float:
    """Set the ``kind`` ("flush" or "reconcile") interval now and across beat restarts.

    The override is stored first, so a beat starting meanwhile already uses it.
    """
    seconds = validate(kind, seconds)
    ensure_conf(celery)
    get_redis(celery).hset(intervals_key(celery), kind, repr(seconds))
    _save_entry(celery, KINDS[kind][0], seconds)
    log.info("counter schedule: %s every %gs", kind, seconds)
    return seconds


def reset_interval(celery: Celery, config: Mapping, kind: str) -> None:
    """Drop the runtime ``kind`` interval: back to the configured one."""
    if kind not in KINDS:
        raise BadInterval(f"unknown schedule {kind!r}: use one of {', '.join(KINDS)}")
    ensure_conf(celery)
    get_redis(celery).hdel(intervals_key(celery), kind)
    _save_entry(celery, KINDS[kind][0], float(config[KINDS[kind][1]]))
