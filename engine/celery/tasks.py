"""The engine's Celery tasks. They take ids and names, never ORM objects."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from celery import Celery

from ..errors import BufferUnavailable, StoreUnavailable

log = logging.getLogger(__name__)

# Transient failures (the engine translates driver errors into these two): retried
# with exponential backoff and jitter, up to 60 s apart.
RETRY_KWARGS = {
    "autoretry_for": (StoreUnavailable, BufferUnavailable),
    "retry_backoff": True,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 5,
}


TASK_NAMES = (
    "counters.flush",
    "counters.flush_shards",
    "counters.reconcile",
    "counters.rebuild_index",
)


def groups_of(shards: Sequence[int], size: int) -> list[list[int]]:
    return [list(shards[i : i + size]) for i in range(0, len(shards), size)]


def _sample(engine) -> None:
    """This minute's activity sample (a dashboard's charts), if no process took it; a
    Redis outage is the flush's to report, not the sample's."""
    try:
        engine.record_activity()
    except BufferUnavailable as exc:
        log.warning("no activity sample: %s", exc)


def register_tasks(celery: Celery, counters, config: Mapping) -> dict:
    """Define the tasks on ``celery`` (see the package docstring); returns them by name."""
    get = counters.get if hasattr(counters, "get") else lambda: counters
    group_size = config["COUNTERS_FLUSH_GROUP_SIZE"]
    expires_s = config["COUNTERS_FLUSH_INTERVAL"]

    @celery.task(name="counters.flush", shared=False, bind=True, **RETRY_KWARGS)
    def flush(self) -> dict:
        """Apply every pending delta to Postgres (exactly once).

        Dirty shards that fit in one group of COUNTERS_FLUSH_GROUP_SIZE are flushed
        here (the result is the flush record); more are sent as ``counters.flush_shards``
        tasks, one per group, to the queue this task came from, each expiring after one
        flush interval (the next flush supersedes it): ``{"dispatched": [{"id",
        "shards"}, …]}``.
        """
        engine = get()
        _sample(engine)
        if engine.missing_indexes():  # rebuilt by its own task, off the flush's way
            rebuild_index.apply_async(expires=expires_s)
        groups = groups_of(engine.dirty_shards(), group_size)
        if len(groups) <= 1:
            shards = groups[0] if groups else []
            return {**engine.flush_shards(shards).as_dict(), "shards": shards}
        queue = (self.request.delivery_info or {}).get("routing_key")
        dispatched = []
        with self.app.producer_or_acquire() as producer:
            for group in groups:
                sent = flush_shards.apply_async(
                    (group,), queue=queue, expires=expires_s, producer=producer
                )
                dispatched.append({"id": sent.id, "shards": group})
        log.info("flush: %d dirty shards sent as %d tasks", sum(map(len, groups)), len(groups))
        return {"dispatched": dispatched}

    @celery.task(
        name="counters.flush_shards", shared=False, bind=True, acks_late=True, **RETRY_KWARGS
    )
    def flush_shards(self, shards: list[int]) -> dict:
        """Flush one group of shards, each under its flush lock: a shard another worker
        is flushing is ``skipped``."""
        shards = [int(s) for s in shards]
        record = get().flush_shards(shards).as_dict()
        return {**record, "shards": shards, "worker": self.request.hostname}

    @celery.task(name="counters.reconcile", shared=False, bind=True, **RETRY_KWARGS)
    def reconcile(self, names: list[str] | None = None, ids: list[int] | None = None) -> dict:
        """Exact recount of ``names`` (default: every counter with a recount query) for
        ``ids`` (default: every row), correcting only the drift."""
        return get().reconcile(names, ids).as_dict()

    @celery.task(name="counters.rebuild_index", shared=False, bind=True, **RETRY_KWARGS)
    def rebuild_index(self) -> dict:
        """Rebuild the existence index of every table whose index Redis lost (views of
        those tables ask Postgres meanwhile). Sent by ``counters.flush`` when it finds
        one missing; two at once do the same idempotent work."""
        return get().ensure_index()

    # names from here, not t.name: evaluating a task proxy would load Celery's config now
    tasks = (flush, flush_shards, reconcile, rebuild_index)
    return dict(zip(TASK_NAMES, tasks, strict=True))
