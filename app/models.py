"""Tables. The counter columns are written by the engine's flush (and recount), never by
the ORM: read them through ``counters.read`` to include the deltas still in Redis."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from .extensions import db


def _created_at() -> Mapped[datetime]:
    return mapped_column(sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


def _counter() -> Mapped[int]:
    return mapped_column(sa.BigInteger, nullable=False, default=0, server_default=sa.text("0"))


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    username: Mapped[str] = mapped_column(sa.String(32), unique=True, nullable=False)
    token_hash: Mapped[str] = mapped_column(sa.String(64), unique=True, nullable=False)
    created_at: Mapped[datetime] = _created_at()


class Content:
    """Columns shared by posts and articles."""

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(200), nullable=False)
    content: Mapped[str] = mapped_column(sa.Text, nullable=False)
    created_at: Mapped[datetime] = _created_at()
    view_count: Mapped[int] = _counter()
    likes_count: Mapped[int] = _counter()
    collects_count: Mapped[int] = _counter()
    shares_count: Mapped[int] = _counter()
    comments_count: Mapped[int] = _counter()
    bot_view_count: Mapped[int] = _counter()
    unique_viewers: Mapped[int] = _counter()

    @declared_attr
    def author_id(cls) -> Mapped[int]:
        return mapped_column(sa.ForeignKey("users.id"), nullable=False, index=True)


class Post(Content, db.Model):
    __tablename__ = "posts"


class Article(Content, db.Model):
    __tablename__ = "articles"


class PostComment(db.Model):
    __tablename__ = "post_comments"

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    post_id: Mapped[int] = mapped_column(
        sa.ForeignKey("posts.id", ondelete="CASCADE"), nullable=False, index=True
    )
    author_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), nullable=False)
    content: Mapped[str] = mapped_column(sa.Text, nullable=False)
    likes_count: Mapped[int] = _counter()
    created_at: Mapped[datetime] = _created_at()


class Comment(db.Model):
    """A comment on an article."""

    __tablename__ = "comments"

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    article_id: Mapped[int] = mapped_column(
        sa.ForeignKey("articles.id", ondelete="CASCADE"), nullable=False, index=True
    )
    author_id: Mapped[int] = mapped_column(sa.ForeignKey("users.id"), nullable=False)
    content: Mapped[str] = mapped_column(sa.Text, nullable=False)
    likes_count: Mapped[int] = _counter()
    created_at: Mapped[datetime] = _created_at()


class UserAction(db.Model):
    """Likes, collects and shares of posts and articles (the recount source of their counters)."""

    __tablename__ = "user_actions"

    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    action_type: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    target_type: Mapped[str] = mapped_column(sa.String(16), nullable=False)
    target_id: Mapped[int] = mapped_column(sa.BigInteger, nullable=False)
    created_at: Mapped[datetime] = _created_at()

    __table_args__ = (
        sa.CheckConstraint(
            "action_type IN ('like', 'collect', 'share')", name="ck_user_actions_action_type"
        ),
        sa.CheckConstraint(
            "target_type IN ('post', 'article')", name="ck_user_actions_target_type"
        ),
        sa.Index(
            "uq_user_actions_toggle",
            "user_id",
            "action_type",
            "target_type",
            "target_id",
            unique=True,
            postgresql_where=sa.text("action_type IN ('like', 'collect')"),
        ),
        # the recount queries: one target type and action, a set of target ids
        sa.Index("ix_user_actions_target", "target_type", "action_type", "target_id"),
    )


class CommentLike(db.Model):
    __tablename__ = "comment_likes"

    comment_id: Mapped[int] = mapped_column(
        sa.ForeignKey("comments.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = _created_at()


class PostCommentLike(db.Model):
    __tablename__ = "post_comment_likes"

    post_comment_id: Mapped[int] = mapped_column(
        sa.ForeignKey("post_comments.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[int] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = _created_at()
