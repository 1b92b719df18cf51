"""Counting views: one Redis round trip, no Postgres, in the normal case.

The existence index answers "does this row exist?" inside the increment script. When
Redis has lost it (``Outcome.NOT_LOADED``), Postgres answers instead and the first view
of an existing row rebuilds the index (so does every flush); until then every view
costs one primary-key lookup. A view of a missing row writes nothing to Redis.
"""

from __future__ import annotations

import logging
import threading
from collections import namedtuple

from flask import current_app

from engine import CounterError, Outcome

from . import content
from .counters import get_counters
from .kinds import Kind

log = logging.getLogger(__name__)

# One index rebuild per process at a time; concurrent requests fall back to Postgres.
_reloading = threading.Lock()


def reload_index(table: str) -> None:
    if not _reloading.acquire(blocking=False):
        return
    try:
        loaded = get_counters().existence.ensure_loaded([table])
        log.info("existence index rebuilt: %s", loaded)
    except CounterError:
        log.warning("could not rebuild the existence index of %s", table, exc_info=True)
    finally:
        _reloading.release()


def count_view(kind: Kind, row_id: int) -> bool:
    """Count one view of an existing row; False when the row does not exist.

    Coalesced in the process when ``COUNTERS_COALESCE_MS`` is set (app/coalesce.py).
    """
    coalescer = current_app.extensions.get("view_coalescer")
    if coalescer is not None:
        return coalescer.count(kind.views, row_id)
    return count_now(kind.views, kind.table, row_id)


def count_now(name: str, table: str, row_id: int) -> bool:
    """Count one view in Redis now (one round trip); False when the row does not exist."""
    counters = get_counters()
    outcome = counters.incr(name, row_id, check_exists=True)
    if outcome is Outcome.NOT_LOADED:
        return add_if_exists(name, table, row_id, 1)
    return outcome is Outcome.COUNTED


def add_if_exists(name: str, table: str, row_id: int, n: int) -> bool:
    """Add ``n`` if Postgres has the row: for when Redis lost the existence index (which
    is rebuilt in passing). False when the row does not exist."""
    if not content.exists(table, row_id):
        return False
    get_counters().incr(name, row_id, n)
    reload_index(table)
    return True


# What a page shows of its row, fetched by the engine's live-read statement.
PAGE_COLUMNS = ("title", "content", "author_id", "created_at")
PageRow = namedtuple("PageRow", ("id", *PAGE_COLUMNS))


def view_and_read(kind: Kind, row_id: int):
    """Count one view and return ``(row, live counts including it)``, or None if absent.

    Normally one Redis round trip (existence check, increment, delta snapshot) and one
    SQL statement (the row, its stored counts and its shard's applied seq).
    """
    counters = get_counters()
    outcome, counts, row = counters.bump_and_read(kind.views, row_id, PAGE_COLUMNS)
    if outcome is Outcome.MISSING:
        return None
    if outcome is Outcome.NOT_LOADED:
        if not add_if_exists(kind.views, kind.table, row_id, 1):
            return None
        _, found, rows = counters.live.read(kind.table, [row_id], columns=PAGE_COLUMNS)
        counts, row = found.get(row_id), rows.get(row_id)
    if row is None or counts is None:  # deleted meanwhile: its view is dropped at flush
        return None
    return PageRow(row_id, **row), counts
