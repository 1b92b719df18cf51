"""Writes whose counter must agree with their source rows (actions, comments).

The protocol of ``engine/reconcile.py``: in ONE transaction lock the target row
``FOR KEY SHARE``, change the source row, add the delta to Redis, then commit. A
recount locks the target ``FOR UPDATE``, so it sees either neither the row nor its
delta or both, and never counts an action twice.
"""

from __future__ import annotations

import logging

from sqlalchemy.sql.dml import UpdateBase

from engine import CounterError, lock_target

from .counters import get_counters
from .extensions import db

log = logging.getLogger(__name__)


class TargetMissing(Exception):
    """The row that an action or a comment points at does not exist."""


def counted_write(table: str, target_id: int, counter: str, statement: UpdateBase, delta: int):
    """Run ``statement`` (an INSERT or DELETE ... RETURNING) with ``table``'s row
    ``target_id`` locked, and add ``delta`` to ``counter`` only if it returned a row.

    Returns that row, or None when nothing changed (a repeated like, a missing unlike).
    If the commit fails the delta is taken back before the error propagates; a failed
    take-back leaves drift that the next reconcile repairs.
    """
    counters = get_counters()
    session = db.session
    try:
        conn = session.connection()
        if not lock_target(conn, table, target_id):
            raise TargetMissing(f"{table} {target_id}")
        row = conn.execute(statement).first()
        if row is not None:
            counters.incr(counter, target_id, delta)
    except BaseException:
        session.rollback()
        raise
    try:
        session.commit()
    except BaseException:
        if row is not None:
            try:
                counters.incr(counter, target_id, -delta)
            except CounterError:
                log.exception("could not take back %+d on %s %s", delta, counter, target_id)
        raise
    return row
