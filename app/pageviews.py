"""Counting views: one Redis round trip, no Postgres, in the normal case.

The existence index answers "does this row exist?" inside the increment script. When
Redis has lost it (``Outcome.NOT_LOADED``), Postgres answers instead and the first view
of an existing row rebuilds the index (so does every flush); until then every view
costs one primary-key lookup. A view of a missing row writes nothing to Redis.
"""

from __future__ import annotations

import logging
import threading

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


def view_and_read(kind: Kind, row_id: int):
    """Count one view and return ``(row, live counts including it)``, or None if absent."""
    counters = get_counters()
    outcome, counts = counters.bump_and_read(kind.views, row_id)
    if outcome is Outcome.MISSING:
        return None
    if outcome is Outcome.NOT_LOADED:
        row = content.get(kind, row_id)
        if row is None:
            return None
        counters.incr(kind.views, row_id)
        reload_index(kind.table)
        counts = counters.read(kind.table, [row_id]).get(row_id)
    else:
        row = content.get(kind, row_id)
    if row is None or counts is None:  # deleted meanwhile: its view is dropped at flush
        return None
    return row, counts
