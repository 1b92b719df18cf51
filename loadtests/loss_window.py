"""What a run with ``--redis-rollback`` may lose, and the checks of what it did lose.

A restart from a dump loses, per shard, the views whose increment reached Redis after
the instant the dump holds and that no flush applied: those not yet flushed at the
kill, and those that land after the restart in a pending batch that the flush drops
with the copies it holds (docs/operations.md, "The window": the batch the dump brought
back, and when the dump held a batch in flight, the one after it too). So the window of
a restart, for one shard, runs from the dump's instant (:attr:`Restart.dump_from`, a
lower bound of it) to the restart, or, if flushes of that shard dropped batches after the
restart, to the end of the last of them before the first batch claimed after the
restart is applied (everything after that claim lands in batches that are applied).
The flush records in the worker log (``counter_flush``: shard, ts, resumed,
already_applied, rolled_back) say when that was: each one is logged after its batch
was claimed, committed and released.

A view *may* be in a window when its request was answered after the window opened and
sent before it closed (its increment happened in between). Per post/article:

* applied <= acknowledged + unknown: no view applied twice;
* acknowledged - applied <= acknowledged views that may be in a window: the loss is
  within the documented window.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from .accounting import Event, Ledger, Mismatch
from .rollback import Restart
from .verify import Check, Values

OUTAGE_GRACE_S = 1.0  # a 503 answered this soon after the restart still counts as down


@dataclass(frozen=True)
class FlushRecord:
    shard: int
    at: float  # wall-clock s, when the batch was committed and released
    resumed: bool
    already_applied: bool
    rolled_back: str | None
    dropped: int

    @property
    def fresh_applied(self) -> bool:
        """A batch claimed after the restart (not resumed) and applied."""
        return not (self.resumed or self.already_applied or self.rolled_back)


def flush_records(paths: Iterable[Path]) -> list[FlushRecord]:
    """Every ``counter_flush`` record (one per shard batch) in these logs, oldest first."""
    out = []
    for path in paths:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            if '"counter_flush"' not in line or not line.startswith("{"):
                continue
            rec = json.loads(line)
            out.append(
                FlushRecord(
                    int(rec["shard"]),
                    datetime.fromisoformat(rec["ts"]).timestamp(),
                    bool(rec.get("resumed")),
                    bool(rec.get("already_applied")),
                    rec.get("rolled_back"),
                    int(rec.get("dropped_rollback") or 0),
                )
            )
    return sorted(out, key=lambda r: r.at)


@dataclass
class Window:
    restart: Restart
    closes: dict[int, float]  # shard -> end of its last dropped batch (none: the restart)
    dropped: dict[int, int]  # shard -> batches dropped after the restart

    def closed_at(self, shard: int) -> float:
        return self.closes.get(shard, self.restart.restarted_at)

    def holds(self, shard: int, ev: Event) -> bool:
        return ev.answered_at >= self.restart.dump_from and ev.sent_at <= self.closed_at(shard)


def windows(restarts: list[Restart], records: list[FlushRecord]) -> list[Window]:
    out = []
    for restart in restarts:
        closes: dict[int, float] = {}
        dropped: Counter = Counter()
        done: set[int] = set()
        for rec in records:
            if rec.at < restart.killed_at or rec.shard in done:
                continue
            if rec.fresh_applied:
                done.add(rec.shard)
            elif rec.rolled_back:
                closes[rec.shard] = rec.at
                dropped[rec.shard] += 1
        out.append(Window(restart, closes, dict(dropped)))
    return out


@dataclass
class ViewLoss:
    """The views of one run, per target and in total, against the windows."""

    acked: int = 0
    applied: int = 0
    lost: int = 0  # sum over targets of acknowledged - applied, where positive
    in_window: int = 0  # acknowledged views that may be in a window
    doubled: int = 0  # sum over targets of applied - (acknowledged + unknown), where positive
    check: Check = field(default_factory=lambda: Check("views"))


def check_views(
    what: str,
    ledger: Ledger,
    values: Values,
    events: list[Event],
    wins: list[Window],
    shards: int,
) -> ViewLoss:
    """Views in ``values`` (Postgres, or the live API) against the acknowledged ones."""
    may_lose: Counter = Counter()
    for ev in events:
        if ev.op == "view" and ev.acked:
            shard = ev.target_id % shards  # engine.keys.Keys.shard_of
            if any(w.holds(shard, ev) for w in wins):
                may_lose[(ev.target_type, ev.target_id)] += 1
    out = ViewLoss(check=Check(f"{what} view counts: none doubled, loss within the window"))
    for key, value in sorted(values.items()):
        col, tt, tid = key
        if col != "view_count":
            continue
        bounds = ledger.expected.get(key)
        lo, hi = (bounds.lo, bounds.hi) if bounds else (0, 0)
        out.check.checked += 1
        out.acked += lo
        out.applied += value
        out.in_window += may_lose[(tt, tid)]
        if value > hi:
            out.doubled += value - hi
            out.check.mismatches.append(
                Mismatch(what, f"{tt} {tid} views", f"at most {hi} (applied twice)", value)
            )
        elif lo - value > 0:
            out.lost += lo - value
            if lo - value > may_lose[(tt, tid)]:
                out.check.mismatches.append(
                    Mismatch(
                        what,
                        f"{tt} {tid} views",
                        f"at least {lo - may_lose[(tt, tid)]} ({may_lose[(tt, tid)]} in a window)",
                        value,
                    )
                )
    return out


def unavailable_only_when_down(events: list[Event], restarts: list[Restart]) -> Check:
    """503 answers only to requests that overlapped a time the counter Redis was down
    (from its kill to ``OUTAGE_GRACE_S`` after it was back)."""
    spans = [(r.killed_at, r.restarted_at + OUTAGE_GRACE_S) for r in restarts]
    refused = [ev for ev in events if ev.status == 503]
    check = Check("503 answers only while the counter Redis was down", len(refused))
    for ev in refused:
        if not any(ev.sent_at <= end and ev.answered_at >= start for start, end in spans):
            key = f"{ev.op} {ev.target_type} {ev.target_id} at {ev.sent_at:.3f}"
            check.mismatches.append(Mismatch("503", key, "no 503 while Redis is up", 503))
    return check


def views_not_found(events: list[Event]) -> Check:
    """Views of the run's posts and articles (it deletes none) answered 404."""
    views = [ev for ev in events if ev.op == "view"]
    check = Check("views of existing posts/articles answered 404", len(views))
    missing = Counter((ev.target_type, ev.target_id) for ev in views if ev.status == 404)
    for (tt, tid), n in sorted(missing.items()):
        check.mismatches.append(Mismatch("404", f"{tt} {tid}", "no 404", f"{n} x 404"))
    return check
