"""Posts and articles (and their comments): one implementation for both kinds."""

from __future__ import annotations

import logging
from collections import namedtuple

import sqlalchemy as sa

from engine import CounterError, Visit

from .counters import counters
from .extensions import db
from .kinds import COUNT_COLUMNS, Kind
from .models import UserAction

log = logging.getLogger(__name__)


class NotAuthor(Exception):
    """Only its author may delete a post or an article."""


def _columns(kind: Kind):
    m = kind.model
    return (m.id, m.title, m.content, m.author_id, m.created_at)


def zero_counts() -> dict[str, int]:
    return dict.fromkeys(COUNT_COLUMNS, 0)


def create(kind: Kind, author_id: int, title: str, content: str) -> sa.Row:
    """Insert a row and mark it in the existence index.

    The mark is set before the commit: the index may then name a row that never
    committed (its views are dropped at flush, as for a deleted row), but it never
    misses a committed row, which would 404 its views until the next index reload.
    """
    conn = db.session.connection()
    row = conn.execute(
        sa.insert(kind.model)
        .values(title=title, content=content, author_id=author_id)
        .returning(*_columns(kind))
    ).one()
    counters.created(kind.table, [row.id])
    db.session.commit()
    return row


# What a page shows of its row, fetched by the engine's live-read statement.
PAGE_COLUMNS = ("title", "content", "author_id", "created_at")
PageRow = namedtuple("PageRow", ("id", *PAGE_COLUMNS))


def view_and_read(
    kind: Kind, row_id: int, visit: Visit | None = None
) -> tuple[PageRow, dict[str, int]] | None:
    """Count one view (under the view policy, given ``visit``) and return ``(row, live
    counts including it)``, or None if absent: one Redis round trip and one SQL statement
    (``Counters.view_and_read``)."""
    found = counters.view_and_read(kind.views, row_id, PAGE_COLUMNS, visit)
    if found is None:
        return None
    counts, row = found
    return PageRow(row_id, **row), counts


def read(kind: Kind, row_id: int) -> tuple[PageRow, dict[str, int]] | None:
    """A row and its live counts, counting nothing; None if absent: one Redis round trip
    and one SQL statement (``Counters.read_rows``)."""
    found = counters.read_rows(kind.table, [row_id], PAGE_COLUMNS).get(row_id)
    if found is None:
        return None
    counts, row = found
    return PageRow(row_id, **row), counts


def trending(kind: Kind, window: str, limit: int) -> list[tuple[PageRow, dict[str, int], int]]:
    """``(row, live counts, views in the window)`` of the most viewed rows of ``window``,
    most first, then newest (``Counters.trending``; raises engine.UnknownWindow)."""
    ranked = counters.trending(kind.views, window, limit)
    found = counters.read_rows(kind.table, [i for i, _ in ranked], PAGE_COLUMNS) if ranked else {}
    return [(PageRow(i, **found[i][1]), found[i][0], n) for i, n in ranked if i in found]


def get(kind: Kind, row_id: int) -> sa.Row | None:
    return db.session.execute(sa.select(*_columns(kind)).where(kind.model.id == row_id)).first()


def get_with_counts(kind: Kind, row_id: int) -> tuple[sa.Row, dict[str, int]] | None:
    """A row and its live counts, counting nothing; None if absent."""
    row = get(kind, row_id)
    counts = counters.read(kind.table, [row_id]).get(row_id) if row is not None else None
    return (row, counts) if counts is not None else None


def page(kind: Kind, limit: int, after: int | None) -> tuple[list[sa.Row], bool]:
    """Newest first, keyset on id: rows with ids below ``after``; and whether more follow."""
    query = sa.select(*_columns(kind)).order_by(kind.model.id.desc()).limit(limit + 1)
    if after is not None:
        query = query.where(kind.model.id < after)
    rows = list(db.session.execute(query))
    return rows[:limit], len(rows) > limit


def newest(kind: Kind, limit: int) -> list[sa.Row]:
    """The newest rows' ids, titles, authors and creation times (no content)."""
    m = kind.model
    query = sa.select(m.id, m.title, m.author_id, m.created_at).order_by(m.id.desc()).limit(limit)
    return list(db.session.execute(query))


def _forget(kind: Kind, row_id: int) -> None:
    try:
        counters.changed(kind.table, [row_id])
    except CounterError:  # pages read Postgres anyway while Redis is away
        log.warning("could not void the read model of %s %d", kind.table, row_id, exc_info=True)


def _lock_own(conn, kind: Kind, row_id: int, user_id: int) -> bool:
    """Lock the row ``FOR UPDATE``; False (rolled back) when it is not there, NotAuthor
    (rolled back) when ``user_id`` did not write it."""
    m = kind.model
    author = conn.execute(sa.select(m.author_id).where(m.id == row_id).with_for_update()).scalar()
    if author is None:
        db.session.rollback()
        return False
    if author != user_id:
        db.session.rollback()
        raise NotAuthor()
    return True


def edit(kind: Kind, row_id: int, user_id: int, changes: dict[str, str]) -> bool:
    """Change a row's title and/or content; False when it is not there.

    The row's read model is voided before the commit and after it (engine
    ``Counters.changed``): a page never shows the old text once the edit is answered.
    """
    conn = db.session.connection()
    if not _lock_own(conn, kind, row_id, user_id):
        return False
    m = kind.model
    conn.execute(sa.update(m).where(m.id == row_id).values(**changes))
    _forget(kind, row_id)
    db.session.commit()
    _forget(kind, row_id)
    return True


def delete(kind: Kind, row_id: int, user_id: int) -> bool:
    """Delete a row, its actions and (by cascade) its comments; False when it is not there.

    Pending deltas of the row are dropped by the next flush. The row is locked first so
    that concurrent action writers (``FOR KEY SHARE``) finish before, or find it gone.
    """
    conn = db.session.connection()
    if not _lock_own(conn, kind, row_id, user_id):
        return False
    m = kind.model
    conn.execute(
        sa.delete(UserAction).where(
            UserAction.target_type == kind.target_type, UserAction.target_id == row_id
        )
    )
    conn.execute(sa.delete(m).where(m.id == row_id))
    db.session.commit()
    try:
        counters.deleted(kind.table, [row_id])
    except CounterError:  # the row is gone either way; its stray deltas are dropped at flush
        log.warning("could not unmark deleted %s %d", kind.table, row_id, exc_info=True)
    return True


def add_comment(kind: Kind, parent_id: int, author_id: int, content: str) -> sa.Row:
    """Insert a comment and count it on its parent; raises engine.TargetMissing."""
    c = kind.comment_model
    statement = (
        sa.insert(c)
        .values({kind.comment_fk: parent_id, "author_id": author_id, "content": content})
        .returning(c.id, getattr(c, kind.comment_fk), c.author_id, c.content, c.created_at)
    )
    return counters.counted_write(kind.comments, parent_id, statement, 1)
