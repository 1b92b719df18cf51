"""Likes, collects and shares: which targets take which actions, and where each is stored.

Posts and articles keep their actions in ``user_actions``; comment likes live in
``comment_likes`` / ``post_comment_likes``. Every change goes through the engine's
reconcile-safe ``counted_write``.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from .counters import counters
from .kinds import ARTICLES, POSTS, Kind
from .models import CommentLike, PostCommentLike, UserAction

ACTIONS = ("like", "collect", "share")
COLUMN = {"like": "likes_count", "collect": "collects_count", "share": "shares_count"}
TOGGLES = ("like", "collect")  # per user and target; shares are counted every time
TOGGLE_INDEX_WHERE = sa.text("action_type IN ('like', 'collect')")


@dataclass(frozen=True)
class ContentTarget:
    """A post or an article: its actions are ``user_actions`` rows."""

    kind: Kind
    actions: tuple[str, ...] = ACTIONS

    @property
    def table(self) -> str:
        return self.kind.table

    def _match(self, action: str, user_id: int, target_id: int):
        return {
            "user_id": user_id,
            "action_type": action,
            "target_type": self.kind.target_type,
            "target_id": target_id,
        }

    def insert(self, action: str, user_id: int, target_id: int):
        return (
            pg_insert(UserAction)
            .values(self._match(action, user_id, target_id))
            .on_conflict_do_nothing(
                index_elements=["user_id", "action_type", "target_type", "target_id"],
                index_where=TOGGLE_INDEX_WHERE,
            )
            .returning(UserAction.id)
        )

    def delete(self, action: str, user_id: int, target_id: int):
        match = self._match(action, user_id, target_id)
        return (
            sa.delete(UserAction)
            .where(*(getattr(UserAction, k) == v for k, v in match.items()))
            .returning(UserAction.id)
        )


@dataclass(frozen=True)
class LikeTarget:
    """A comment: its likes are rows of a ``(comment, user)`` table."""

    table: str
    model: type
    fk: str
    actions: tuple[str, ...] = ("like",)

    def insert(self, action: str, user_id: int, target_id: int):
        return (
            pg_insert(self.model)
            .values({self.fk: target_id, "user_id": user_id})
            .on_conflict_do_nothing()
            .returning(self.model.user_id)
        )

    def delete(self, action: str, user_id: int, target_id: int):
        return (
            sa.delete(self.model)
            .where(getattr(self.model, self.fk) == target_id, self.model.user_id == user_id)
            .returning(self.model.user_id)
        )


TARGETS = {
    "post": ContentTarget(POSTS),
    "article": ContentTarget(ARTICLES),
    "comment": LikeTarget("comments", CommentLike, "comment_id"),
    "post_comment": LikeTarget("post_comments", PostCommentLike, "post_comment_id"),
}


def add(target, action: str, user_id: int, target_id: int) -> bool:
    """Record an action; False when a like or collect was already there. Raises
    engine.TargetMissing."""
    statement = target.insert(action, user_id, target_id)
    counter = f"{target.table}.{COLUMN[action]}"
    return counters.counted_write(counter, target_id, statement, 1) is not None


def remove(target, action: str, user_id: int, target_id: int) -> bool:
    """Undo a like or collect; False when there was none. Raises engine.TargetMissing."""
    statement = target.delete(action, user_id, target_id)
    counter = f"{target.table}.{COLUMN[action]}"
    return counters.counted_write(counter, target_id, statement, -1) is not None
