"""``flask --app app users create NAME`` and ``seed-demo``; the ``counters`` commands
come with the engine's extension."""

from __future__ import annotations

import json

import click
import sqlalchemy as sa
from flask import Flask
from flask.cli import AppGroup, with_appcontext

from . import content
from .extensions import db
from .kinds import ARTICLES, POSTS
from .models import Post
from .users import UsernameTaken, create_user, reissue_token, valid_username

users_cli = AppGroup("users", help="Manage users.")

DEMO_USERS = ("alice", "bob", "carol")
DEMO_POSTS = 3
DEMO_ARTICLES = 2


def _print(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@users_cli.command("create")
@click.argument("name")
def create_user_command(name: str):
    """Create a user and print its token (shown only once)."""
    if not valid_username(name):
        raise click.BadParameter("3 to 32 characters of A-Z, a-z, 0-9 and _", param_hint="NAME")
    try:
        user_id, token = create_user(name)
    except UsernameTaken:
        raise click.ClickException(f"username {name!r} is taken") from None
    _print({"id": user_id, "username": name, "token": token})


@click.command("seed-demo")
@with_appcontext
def seed_demo_command():
    """Create demo users (or give them new tokens), posts, articles and comments."""
    users = {}
    for name in DEMO_USERS:
        try:
            user_id, token = create_user(name)
        except UsernameTaken:
            user_id, token = reissue_token(name)
        users[name] = {"id": user_id, "token": token}
    author = users[DEMO_USERS[0]]["id"]
    has_posts = db.session.scalar(sa.select(Post.id).where(Post.author_id == author).limit(1))
    created = {"posts": [], "articles": []}
    if has_posts is None:
        commenter = users[DEMO_USERS[1]]["id"]
        for kind, n in ((POSTS, DEMO_POSTS), (ARTICLES, DEMO_ARTICLES)):
            for i in range(1, n + 1):
                title = f"Demo {kind.target_type} {i}"
                row = content.create(kind, author, title, f"Body of {title.lower()}.")
                content.add_comment(kind, row.id, commenter, f"Nice {kind.target_type}!")
                created[kind.table].append(row.id)
    _print({"users": users, **created})


def register_cli(app: Flask) -> None:
    app.cli.add_command(users_cli)
    app.cli.add_command(seed_demo_command)
