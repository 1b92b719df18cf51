"""``flask --app app counters flush|reconcile|stats``, ``users create NAME``, ``seed-demo``."""

from __future__ import annotations

import json

import click
import sqlalchemy as sa
from flask import Flask
from flask.cli import AppGroup, with_appcontext

from . import content, maintenance
from .extensions import db
from .kinds import ARTICLES, POSTS
from .models import Post
from .users import UsernameTaken, create_user, reissue_token, valid_username

counters_cli = AppGroup("counters", help="Flush, reconcile and inspect the counters.")
users_cli = AppGroup("users", help="Manage users.")

DEMO_USERS = ("alice", "bob", "carol")
DEMO_POSTS = 3
DEMO_ARTICLES = 2


def _print(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


@counters_cli.command("flush")
def flush_command():
    """Apply every pending delta to Postgres now."""
    _print(maintenance.flush())


@counters_cli.command("reconcile")
def reconcile_command():
    """Recount every counter from its source rows and fix the drift."""
    _print(maintenance.reconcile())


@counters_cli.command("stats")
def stats_command():
    """Backlog per shard and the last flush and reconcile."""
    _print(maintenance.stats())


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
    app.cli.add_command(counters_cli)
    app.cli.add_command(users_cli)
    app.cli.add_command(seed_demo_command)
