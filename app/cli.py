"""``flask --app app counters flush|reconcile|stats|schedule``, ``users create NAME``,
``seed-demo``."""

from __future__ import annotations

import json

import click
import sqlalchemy as sa
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from . import content, maintenance, schedules
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


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def _last(what: str, last: dict | None, details: str) -> str:
    if last is None:
        return f"last {what}: never"
    return f"last {what}: {last['at']} ({_seconds(last['age_s'])} ago), {details}"


def stats_text(stats: dict) -> str:
    """``maintenance.stats()`` for a terminal."""
    lines = [
        f"pending counters: {stats['pending']} (inflight {stats['inflight']}), "
        + (
            f"oldest pending delta: {_seconds(stats['oldest_pending_age_s'])} old"
            if stats["oldest_pending_age_s"] is not None
            else "nothing to flush"
        ),
        "",
        f"{'shard':>5}  {'pending':>8}  {'inflight':>8}  {'batch':>8}  oldest",
    ]
    for s in stats["shards"]:
        lines.append(
            f"{s['shard']:>5}  {s['pending']:>8}  {s['inflight']:>8}  "
            f"{s['inflight_seq'] or '-':>8}  {_seconds(s['oldest_age_s'])}"
        )
    flush, rec = stats["last_flush"], stats["last_reconcile"]
    lines.append("")
    if flush is not None:
        errors = "; ".join(flush["errors"]) or "no errors"
        flush_details = (
            f"{flush['flushed']} counters in {flush['batches']} batches, "
            f"{_seconds(flush['duration_s'])}, {flush['rows_missing']} rows missing, {errors}"
        )
    lines.append(_last("flush", flush, flush_details if flush is not None else ""))
    rec_details = f"{rec['checked']} checked, {rec['fixed']} fixed" if rec is not None else ""
    lines.append(_last("reconcile", rec, rec_details))
    lines += ["", "totals:"]
    lines += [f"  {name:<24} {n}" for name, n in stats["totals"].items()]
    lines += ["", "increments accepted:"]
    lines += [f"  {name:<24} {n}" for name, n in stats["accepted"].items()] or ["  none"]
    return "\n".join(lines)


@counters_cli.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def stats_command(as_json: bool):
    """Backlog per shard, the last flush and reconcile, the running totals."""
    stats = maintenance.stats()
    if as_json:
        _print(stats)
    else:
        click.echo(stats_text(stats))


def schedule_text(schedule: dict) -> str:
    lines = []
    for e in schedule["entries"]:
        every = f"every {e['interval_s']:g} s" if e["interval_s"] is not None else "not an interval"
        where = "set at runtime" if e["source"] == "runtime" else "from the config"
        if not e["in_redis"]:
            lines.append(f"{e['name']}: {every} ({where}); not in Redis yet (no beat has run)")
            continue
        runs = e["total_run_count"]
        last = f"last run {e['last_run_at']}, {runs} runs" if runs else "not run yet"
        lines.append(
            f"{e['name']}: {every} ({where}), next run {e['next_run_at']}, {last}"
            + ("" if e["enabled"] else ", DISABLED")
        )
    return "\n".join(lines)


def _show_schedule(as_json: bool) -> None:
    schedule = schedules.describe(current_app.extensions["celery"], current_app.config)
    if as_json:
        _print(schedule)
    else:
        click.echo(schedule_text(schedule))


@counters_cli.group("schedule", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
@click.pass_context
@with_appcontext
def schedule_cli(ctx: click.Context, as_json: bool):
    """The RedBeat entries that flush and reconcile: interval and next run."""
    if ctx.invoked_subcommand is None:
        _show_schedule(as_json)


@schedule_cli.command("set")
@click.argument("kind", type=click.Choice(list(schedules.KINDS)))
@click.argument("seconds", type=float)
def schedule_set_command(kind: str, seconds: float):
    """Run flush or reconcile every SECONDS from now on; a running beat follows, and the
    interval survives a beat restart."""
    try:
        schedules.set_interval(current_app.extensions["celery"], kind, seconds)
    except schedules.BadInterval as exc:
        raise click.BadParameter(str(exc), param_hint="SECONDS") from None
    _show_schedule(False)


@schedule_cli.command("reset")
@click.argument("kind", type=click.Choice(list(schedules.KINDS)))
def schedule_reset_command(kind: str):
    """Go back to the configured interval (COUNTERS_FLUSH/RECONCILE_INTERVAL)."""
    schedules.reset_interval(current_app.extensions["celery"], current_app.config, kind)
    _show_schedule(False)


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
