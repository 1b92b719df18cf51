"""Flush, reconcile and backlog stats: one implementation behind the Celery tasks, the
admin endpoints and the CLI. The engine keeps the totals and the last flush and
reconcile in its Redis stats hash, and logs each batch and each reconcile."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from datetime import datetime, timezone

from engine import CounterError

from .counters import get_counters
from .kinds import KINDS
from .metrics import counter_name

log = logging.getLogger(__name__)


def log_flush(summary: dict) -> None:
    # one line per flush; idle flushes (every couple of seconds) only at DEBUG
    busy = summary.get("flushed") or summary.get("errors")
    log.log(
        logging.INFO if busy else logging.DEBUG, "%s", json.dumps({"event": "flush", **summary})
    )


def _flush_record(summary) -> dict:
    return {
        **summary.as_dict(),
        "shard_batches": [
            {
                "shard": s.shard,
                "seq": s.seq,
                "counters": s.counters,
                "resumed": s.resumed,
                "already_applied": s.already_applied,
            }
            for s in summary.shards
        ],
    }


def flush(shards: Sequence[int] | None = None) -> dict:
    """Flush ``shards`` (default: every dirty shard) now, after rebuilding a lost
    existence index; the summary dict, also logged as one JSON line."""
    counters = get_counters()
    counters.existence.ensure_loaded([k.table for k in KINDS])
    try:
        if shards is None:
            summary = _flush_record(counters.flush_all())
        else:
            summary = {**_flush_record(counters.flush_shards(shards)), "shards": list(shards)}
    except CounterError as exc:
        partial = getattr(exc, "summary", None)
        log_flush(_flush_record(partial) if partial is not None else {"errors": [str(exc)]})
        raise
    log_flush(summary)
    return summary


def reconcile(names=None, ids=None) -> dict:
    """Exact recount of ``names`` (default all) for ``ids`` (default every row)."""
    started = time.perf_counter()
    result = get_counters().reconcile(names, ids).as_dict()
    record = {
        "event": "reconcile",
        "counters": None if names is None else list(names),  # None: every counter
        "rows": None if ids is None else len(ids),  # None: every row
        "checked": result["checked"],
        "fixed": result["fixed"],
        "duration_s": round(time.perf_counter() - started, 6),
    }
    log.info("%s", json.dumps(record))
    return result


def _age_s(ms: int | None, now_s: float) -> float | None:
    return round(max(0.0, now_s - ms / 1000), 3) if ms is not None else None


def _when(last: dict | None, now_s: float) -> dict | None:
    """A last flush/reconcile record with its time as ISO 8601 and its age."""
    if last is None:
        return None
    at = datetime.fromtimestamp(last["at_ms"] / 1000, timezone.utc)
    return {
        **last,
        "at": at.isoformat(timespec="milliseconds"),
        "age_s": _age_s(last["at_ms"], now_s),
    }


def stats() -> dict:
    """Counters waiting for Postgres (``pending`` includes the ``inflight`` ones), per
    shard with the age of their oldest delta, the last flush and reconcile, the engine's
    running totals and the increments accepted per counter, as every process sees them."""
    counters = get_counters()
    shards = counters.backlog()
    shared = counters.stats.snapshot()
    now_s = time.time()
    for shard in shards:
        shard["oldest_age_s"] = _age_s(shard["oldest_ms"], now_s)
    oldest = [s["oldest_ms"] for s in shards if s["oldest_ms"] is not None]
    flushes = shared["flush_buckets"][-1][1]
    accepted = {
        counter_name(counters.registry, code): n for code, n in sorted(shared["accepted"].items())
    }
    return {
        "pending": sum(s["pending"] + s["inflight"] for s in shards),
        "inflight": sum(s["inflight"] for s in shards),
        "oldest_pending_age_s": _age_s(min(oldest), now_s) if oldest else None,
        "shards": shards,
        "last_flush": _when(shared["last_flush"], now_s),
        "last_reconcile": _when(shared["last_reconcile"], now_s),
        "flush_batch_duration": {
            "count": flushes,
            "sum_s": round(shared["flush_seconds_sum"], 6),
            "mean_s": round(shared["flush_seconds_sum"] / flushes, 6) if flushes else None,
        },
        "totals": shared["totals"],
        "accepted": accepted,
    }
