"""The checks and the report of a ``--redis-rollback`` run, after the load has drained.

Action counters (likes, collects, shares, comments, comment likes) lose the deltas of
the window too; their rows in Postgres are the truth, so the run reconciles (the admin
API, as docs/operations.md says to after a Redis incident) and then wants them exact.
Views have no truth besides their deltas: they are checked against the window
(``loss_window``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa

from . import verify
from .accounting import Event, Ledger
from .loss_window import (
    check_views,
    flush_records,
    unavailable_only_when_down,
    views_not_found,
    windows,
)
from .rollback import RedisRollback
from .seed import Seed
from .stack import Stack

# The only outage of the run is the counter Redis, killed with its snapshots off: a view
# answered 503 never reached a Redis whose data survived. (A page view answered 503
# because Postgres failed after the increment would have counted: not in this run.)
REFUSED = (("view", 503),)


@dataclass
class RollbackVerdict:
    checks: list[verify.Check] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def verify_rollback(
    stack: Stack,
    sql: sa.Engine,
    seed: Seed,
    ledger: Ledger,
    events: list[Event],
    live: verify.Values,
    faults: RedisRollback,
    shards: int,
) -> RollbackVerdict:
    out = RollbackVerdict()
    say = out.lines.append
    before = verify.stored_counters(sql, seed)
    reconciled = stack.admin("POST", "reconcile", timeout=120)
    stats = stack.admin("GET", "stats", timeout=30).get("totals") or {}
    stored = verify.stored_counters(sql, seed)
    records = flush_records([stack.log_path("worker")])
    wins = windows(faults.restarts, records)
    live_views = check_views("live API", ledger, live, events, wins, shards)
    views = check_views("Postgres", ledger, stored, events, wins, shards)
    actions = {k: v for k, v in stored.items() if k[0] != "view_count"}
    counters = verify.check_stored(ledger, actions)
    counters.name = "Postgres counters but views (after reconcile) == acknowledged requests"
    out.checks += [
        live_views.check,
        views.check,
        counters,
        verify.check_recounts(stored, verify.recounts(sql, stored)),
        verify.check_rows(ledger, verify.action_rows(sql), stored),
        verify.check_served(verify.live_counters(stack.base_url, stored), stored),
        views_not_found(events),
        unavailable_only_when_down(events, faults.restarts),
    ]
    if len(faults.restarts) < 2:
        out.problems.append(f"only {len(faults.restarts)} counter Redis restarts (want 2+)")

    t0 = faults.started_at
    for win in wins:
        r = win.restart
        end = max(win.closes.values(), default=r.restarted_at)
        say(
            f"restart #{r.n}: dump of t={r.dump_from - t0:.1f}s (LASTSAVE {r.lastsave}), "
            f"killed at t={r.killed_at - t0:.1f}s, back at t={r.restarted_at - t0:.1f}s; "
            f"window t={r.dump_from - t0:.1f}..{end - t0:.1f}s, "
            f"{sum(win.dropped.values())} batches dropped on {len(win.dropped)} shards "
            f"(at most {max(win.dropped.values(), default=0)} per shard)"
        )
    dropped = [rec for rec in records if rec.rolled_back]
    say(
        f"views: {views.acked} acknowledged, {views.applied} applied, {views.lost} lost "
        f"(bound: {views.in_window} acknowledged in a window), {views.doubled} applied twice"
    )
    n503 = ledger.count(lambda op, st: op == "view" and st == 503)
    n404 = ledger.count(lambda op, st: op == "view" and st == 404)
    say(f"views answered 503 (refused, not counted): {n503}; answered 404: {n404}")
    say(f"posts created during the load: {sum(1 for tt, _ in ledger.created if tt == 'post')}")
    say(
        f"engine drops (worker log): {len(dropped)} batches, "
        f"{sum(rec.dropped for rec in dropped)} deltas; stats totals (kept in the "
        f"ledger): batches_rolled_back="
        f"{stats.get('batches_rolled_back')}, deltas_dropped_rollback="
        f"{stats.get('deltas_dropped_rollback')}"
    )
    below_zero = sum(1 for v in before.values() if v < 0)
    say(
        f"reconcile after the load: {reconciled.get('checked')} checked, "
        f"{reconciled.get('fixed')} fixed; counters below 0 before it: {below_zero}"
    )
    return out
