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
    """Count one view of an existing row; False when the row does not exist."""
    counters = get_counters()
    outcome = counters.incr(kind.views, row_id, check_exists=True)
    if outcome is Outcome.NOT_LOADED:
        if not content.exists(kind.table, row_id):
            return False
        counters.incr(kind.views, row_id)
        reload_index(kind.table)
        return True
    return outcome is Outcome.COUNTED


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
        if not content.exists(kind.table, row_id):
            return None
        counters.incr(kind.views, row_id)
        reload_index(kind.table)
        _, found, rows = counters.live.read(kind.table, [row_id], columns=PAGE_COLUMNS)
        counts, row = found.get(row_id), rows.get(row_id)
    if row is None or counts is None:  # deleted meanwhile: its view is dropped at flush
        return None
    return PageRow(row_id, **row), counts
