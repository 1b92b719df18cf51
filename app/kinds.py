"""The two kinds of content, posts and articles: same columns, same API, own tables."""

from __future__ import annotations

from dataclasses import dataclass

from .models import Article, Comment, Post, PostComment

COUNT_COLUMNS = (
    "view_count",
    "likes_count",
    "collects_count",
    "shares_count",
    "comments_count",
    "bot_view_count",
    "unique_viewers",
)


@dataclass(frozen=True)
class Kind:
    table: str  # "posts"; also the URL segment under /api
    target_type: str  # "post": its name in user_actions and in the actions API
    model: type
    comment_model: type
    comment_fk: str  # column of the comment row naming its parent

    @property
    def views(self) -> str:
        """Registry name of the view counter."""
        return f"{self.table}.view_count"

    @property
    def comments(self) -> str:
        return f"{self.table}.comments_count"

    def counter(self, column: str) -> str:
        return f"{self.table}.{column}"


POSTS = Kind("posts", "post", Post, PostComment, "post_id")
ARTICLES = Kind("articles", "article", Article, Comment, "article_id")
KINDS = (POSTS, ARTICLES)
