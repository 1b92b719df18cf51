"""Writes whose counter must agree with their source rows (likes, comments, …).

The protocol of ``engine/reconcile.py``: in ONE transaction lock the target row
``FOR KEY SHARE``, change the source row, add the delta to Redis, then commit. A
recount locks the target ``FOR UPDATE``, so it sees either neither the source row nor
its delta or both, and never counts an action twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.orm import Session

from .errors import CounterError, TargetMissing
from .reconcile import lock_target

log = logging.getLogger(__name__)


def counted_write(
    session: Session,
    table: str,
    target_id: int,
    statement: sa.Executable,
    delta: int,
    incr: Callable[[int], None],
) -> sa.Row | None:
    """Run ``statement`` (an INSERT or DELETE … RETURNING) with row ``target_id`` of
    ``table`` locked, call ``incr(delta)`` only if it returned a row, then commit.

    Returns that row, or None when nothing changed (a repeated like, a missing unlike).
    Raises TargetMissing when the target row does not exist. If the commit fails the
    delta is taken back (``incr(-delta)``) before the error propagates; a failed
    take-back leaves drift that the next reconcile repairs.
    """
    try:
        conn = session.connection()
        if not lock_target(conn, table, target_id):
            raise TargetMissing(f"{table} {target_id}")
        row = conn.execute(statement).first()
        if row is not None:
            incr(delta)
    except BaseException:
        session.rollback()
        raise
    try:
        session.commit()
    except BaseException:
        if row is not None:
            try:
                incr(-delta)
            except CounterError:
                log.exception("could not take back %+d on %s %s", delta, table, target_id)
        raise
    return row
