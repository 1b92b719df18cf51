"""``flask counters flush|reconcile|stats|schedule``: the engine's commands, added to
every app that runs ``FlaskCounters.init_app``. ``schedule`` needs the Celery app in
``app.extensions["celery"]`` (where Flask's ``celery_init_app`` pattern puts it)."""

from __future__ import annotations

import json

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from .. import intervals

counters_cli = AppGroup("counters", help="Flush, reconcile and inspect the counters.")


def _print(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _counters():
    return current_app.extensions["counters"].counters


def _schedule():
    from ..celery import schedule  # the [celery] extra

    return schedule


def _celery():
    celery = current_app.extensions.get("celery")
    if celery is None:
        raise click.ClickException('no Celery app in app.extensions["celery"]')
    return celery


@counters_cli.command("flush")
def flush_command():
    """Apply every pending delta to Postgres now."""
    _counters().ensure_index()
    _print(_counters().flush_all().as_dict())


@counters_cli.command("reconcile")
def reconcile_command():
    """Recount every counter from its source rows and fix the drift."""
    _print(_counters().reconcile().as_dict())


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def _last(what: str, last: dict | None, details: str) -> str:
    if last is None:
        return f"last {what}: never"
    return f"last {what}: {last['at']} ({_seconds(last['age_s'])} ago), {details}"


def stats_text(stats: dict) -> str:
    """``Counters.report()`` for a terminal."""
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
    stats = _counters().report()
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
    schedule = _schedule().describe(_celery(), current_app.config)
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
@click.argument("kind", type=click.Choice(list(intervals.KINDS)))
@click.argument("seconds", type=float)
def schedule_set_command(kind: str, seconds: float):
    """Run flush or reconcile every SECONDS from now on; a running beat follows, and the
    interval survives a beat restart."""
    try:
        _schedule().set_interval(_celery(), kind, seconds)
    except intervals.BadInterval as exc:
        raise click.BadParameter(str(exc), param_hint="SECONDS") from None
    _show_schedule(False)


@schedule_cli.command("reset")
@click.argument("kind", type=click.Choice(list(intervals.KINDS)))
def schedule_reset_command(kind: str):
    """Go back to the configured interval (COUNTERS_FLUSH/RECONCILE_INTERVAL)."""
    _schedule().reset_interval(_celery(), current_app.config, kind)
    _show_schedule(False)


@counters_cli.command("schema-sql")
@click.option("--step", help="One step (e.g. 0001_ledger) instead of all of them.")
@with_appcontext
def schema_sql_command(step: str | None):
    """Print the engine's schema steps as plain SQL, to paste into a migration."""
    from .. import schema

    click.echo(schema.step_sql(step) if step else schema.all_sql())


@counters_cli.command("reshard")
@click.argument("shards", type=click.IntRange(min=1))
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@with_appcontext
def reshard_command(shards: int, yes: bool):
    """Move this scope to SHARDS shards: refuse increments (503) while every shard is
    flushed empty, rebuild the existence index, record the new count. Then restart
    every web process and worker with COUNTERS_SHARDS=SHARDS."""
    counters = _counters()
    if not yes:
        click.confirm(
            f"Reshard scope {counters.scope!r} from {counters.shards} to {shards} shards? "
            "Increments are refused until the processes restart with the new count",
            abort=True,
        )
    _print(counters.reshard(shards))
    click.echo(f"now restart every process with COUNTERS_SHARDS={shards}", err=True)
