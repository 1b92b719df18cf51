"""Flush, reconcile and backlog stats: one implementation behind the Celery tasks, the
admin endpoints and the CLI. The engine keeps the totals and the last flush and
reconcile in its Redis stats hash, and logs each batch and each reconcile."""

from __future__ import annotations

import json
import logging
import time

from engine import CounterError

from .counters import get_counters
from .kinds import KINDS

log = logging.getLogger(__name__)


def _log_flush(summary: dict) -> None:
    # one line per flush; idle flushes (every couple of seconds) only at DEBUG
    busy = summary.get("flushed") or summary.get("errors")
    log.log(
        logging.INFO if busy else logging.DEBUG, "%s", json.dumps({"event": "flush", **summary})
    )


def flush() -> dict:
    """Flush every shard now, after rebuilding a lost existence index; the summary dict."""
    counters = get_counters()
    counters.existence.ensure_loaded([k.table for k in KINDS])
    try:
        summary = counters.flush_all().as_dict()
    except CounterError as exc:
        partial = getattr(exc, "summary", None)
        _log_flush(partial.as_dict() if partial is not None else {"errors": [str(exc)]})
        raise
    _log_flush(summary)
    return summary


def reconcile(names=None, ids=None) -> dict:
    """Exact recount of ``names`` (default all) for ``ids`` (default every row)."""
    return get_counters().reconcile(names, ids).as_dict()


def stats() -> dict:
    """Counters waiting for Postgres (pending and inflight), per shard, the last flush and
    reconcile, and the engine's running totals."""
    counters = get_counters()
    shards = counters.backlog()
    oldest = [s["oldest_ms"] for s in shards if s["oldest_ms"] is not None]
    age_s = max(0.0, time.time() - min(oldest) / 1000) if oldest else None
    shared = counters.stats.snapshot()
    return {
        "pending": sum(s["pending"] + s["inflight"] for s in shards),
        "inflight": sum(s["inflight"] for s in shards),
        "oldest_pending_age_s": round(age_s, 3) if age_s is not None else None,
        "shards": shards,
        "last_flush": shared["last_flush"],
        "last_reconcile": shared["last_reconcile"],
        "totals": shared["totals"],
        "accepted": shared["accepted"],
    }
