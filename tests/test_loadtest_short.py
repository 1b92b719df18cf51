"""The load test, short: ``python -m loadtests run`` must end with an exact accounting.

A few Locust users for about 20 s against gunicorn + a Celery worker + RedBeat beat on
127.0.0.1, then the same with the worker SIGKILLed several times and beat restarted
once. The runner creates (and drops) its own scratch database and flushes only its
own Redis db; it exits 0 only when every counter in Postgres equals what the API
acknowledged and its exact recount, with no failed request. All traffic goes to
127.0.0.1 and stops by itself; every wait is bounded.

With ``--redis-rollback`` the counter buffer's own redis-server is SIGKILLed twice and
comes back from an older dump: no view may be applied twice, no existing post may
answer 404, and the views lost must be within the documented window.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from loadtests.accounting import Event, EventLog, build_ledger, compare, read_events
from loadtests.loss_window import FlushRecord, check_views, windows
from loadtests.rollback import Restart
from tests.servers import ROOT, admin_pg_url, redis_base_url

RUN_TIMEOUT_S = 240

pytestmark = pytest.mark.timeout(RUN_TIMEOUT_S + 60)


def run_loadtest(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # The runner's own servers: a scratch database next to the test databases, and a
    # Redis db on the test server that it claims (so two test sessions at once never
    # share one). DATABASE_URL / REDIS_URL would be used as they are.
    for key in ("DATABASE_URL", "REDIS_URL"):
        env.pop(key, None)
    env["LOADTEST_PG_ADMIN_URL"] = admin_pg_url()
    env["LOADTEST_REDIS_URL"] = redis_base_url()
    cmd = [sys.executable, "-m", "loadtests", "run", *args, "--out", str(tmp_path / "out")]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    print(proc.stdout[-6000:], proc.stderr[-3000:], sep="\n")  # shown when the test fails
    return proc


def verdict(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stdout.splitlines() if line.startswith("VERDICT:")]
    assert lines, f"no verdict line (exit {proc.returncode})"
    return lines[-1]


def test_short_load_accounts_exactly(tmp_path):
    proc = run_loadtest(tmp_path, "--users", "8", "--duration", "20s")
    assert verdict(proc).startswith("VERDICT: PASS"), verdict(proc)
    assert proc.returncode == 0


def test_short_load_with_worker_kills_and_beat_restart_accounts_exactly(tmp_path):
    proc = run_loadtest(tmp_path, "--users", "8", "--duration", "25s", "--chaos")
    assert verdict(proc).startswith("VERDICT: PASS"), verdict(proc)
    assert proc.returncode == 0
    assert proc.stdout.count("SIGKILL worker") >= 3
    assert "beat restarted" in proc.stdout


def test_short_load_with_counter_redis_restarted_from_older_dumps_never_doubles_or_404s(
    tmp_path,
):
    proc = run_loadtest(
        tmp_path,
        *("--users", "10", "--wait", "0.2,0.8", "--duration", "25s", "--redis-rollback"),
        *("--posts", "60", "--articles", "20"),
    )
    assert verdict(proc).startswith("VERDICT: PASS"), verdict(proc)
    assert proc.returncode == 0
    assert proc.stdout.count("SIGKILL counter Redis") >= 2
    assert re.search(r"views: \d+ acknowledged, .* 0 applied twice", proc.stdout)
    assert re.search(r"answered 404: 0\b", proc.stdout)
    # the rollbacks bit: flushes dropped batches Postgres already held, and posts created
    # after a dump was taken were viewed
    assert re.search(r"engine drops \(worker log\): [1-9]\d* batches", proc.stdout)
    assert re.search(r"posts created during the load: [1-9]", proc.stdout)


def write_log(directory, events) -> None:
    """Log ``(op, target_type, id, user, status)``; status None: sent, never answered."""
    log = EventLog(directory, "t")
    for op, tt, tid, user, status in events:
        n = log.sent(op, tt, tid, user)
        if status is not None:
            log.answered(n, status)
    log.close()


def test_ledger_counts_only_acknowledged_requests_and_bounds_the_unanswered(tmp_path):
    write_log(
        tmp_path,
        [
            ("view", "post", 1, 7, 204),
            ("view", "post", 1, 7, 200),
            ("view", "post", 1, 7, 404),  # refused: not counted
            ("view", "post", 1, 7, 0),  # connection lost: maybe counted
            ("view", "post", 1, 7, None),  # never answered: maybe counted
            ("share", "article", 2, 7, 503),  # 5xx: maybe counted
            ("like", "post", 1, 7, 201),
            ("like", "post", 1, 8, 201),
            ("unlike", "post", 1, 8, 204),
            ("like", "post", 1, 9, 0),  # lost, then confirmed by a later answer
            ("like", "post", 1, 9, 200),
            ("collect", "post", 1, 7, 201),
            ("uncollect", "post", 1, 7, 0),  # lost last: either way
        ],
    )
    ledger = build_ledger(read_events(tmp_path))
    views = ledger.expected[("view_count", "post", 1)]
    assert (views.lo, views.hi) == (2, 4)
    shares = ledger.expected[("shares_count", "article", 2)]
    assert (shares.lo, shares.hi) == (0, 1)
    likes = ledger.expected[("likes_count", "post", 1)]
    assert (likes.lo, likes.hi) == (2, 2)
    collects = ledger.expected[("collects_count", "post", 1)]
    assert (collects.lo, collects.hi) == (0, 1)
    assert ledger.present() == {(7, "like", "post", 1), (9, "like", "post", 1)}
    assert ledger.maybe() == {(7, "collect", "post", 1)}

    actual = {
        ("view_count", "post", 1): 5,  # one more than could have been acknowledged
        ("likes_count", "post", 1): 2,
        ("shares_count", "post", 1): 1,  # a target nobody shared must stay 0
    }
    bad, checked = compare(ledger, actual, "postgres")
    assert checked == 3
    assert sorted(m.key for m in bad) == ["post 1 shares_count", "post 1 view_count"]


def view(tid: int, sent: float, answered: float, status: int = 204) -> Event:
    return Event("view", "post", tid, 7, status, sent, answered)


def test_loss_window_runs_from_the_dump_to_the_last_batch_dropped_after_the_restart():
    restart = Restart(1, "checkpoint", dump_from=100.0, lastsave=100, killed_at=103.0)
    restart.restarted_at = 104.0
    records = [
        FlushRecord(1, 102.0, False, False, None, 0),  # before the kill: not this window's
        FlushRecord(1, 104.5, True, False, "stale", 3),  # the restored inflight batch
        FlushRecord(1, 105.5, False, False, "past", 2),  # its successor
        FlushRecord(1, 106.5, False, False, None, 0),  # applied: the window is closed
        FlushRecord(1, 109.0, False, False, "stale", 1),  # a later rollback's business
        FlushRecord(2, 104.6, False, False, None, 0),  # shard 2 lost nothing after it
    ]
    (win,) = windows([restart], records)
    assert win.closed_at(1) == 105.5 and win.closed_at(2) == 104.0
    assert win.dropped == {1: 2}
    assert win.holds(1, view(1, 105.0, 105.1)) and not win.holds(1, view(1, 106.0, 106.1))
    assert win.holds(2, view(2, 99.9, 100.1)) and not win.holds(2, view(2, 104.1, 104.2))
    assert not win.holds(1, view(1, 99.0, 99.9))  # answered before the dump: in it


def test_view_check_fails_a_double_and_a_loss_beyond_the_window():
    restart = Restart(1, "scheduled", dump_from=100.0, lastsave=100, killed_at=101.0)
    restart.restarted_at = 102.0
    (win,) = windows([restart], [])
    events = [view(1, 99.0, 99.1), view(1, 100.5, 100.6), view(1, 103.0, 103.1)]
    events += [view(2, 99.0, 99.1), view(2, 103.0, 103.1)]
    events += [view(3, 100.5, 100.6, status=0)]  # no answer: may count, or not
    ledger = build_ledger(events)
    ok = {("view_count", "post", 1): 2, ("view_count", "post", 2): 2}
    ok[("view_count", "post", 3)] = 1
    result = check_views("Postgres", ledger, ok, events, [win], shards=16)
    assert result.check.ok and (result.lost, result.in_window, result.doubled) == (1, 1, 0)
    bad = {("view_count", "post", 1): 1, ("view_count", "post", 2): 3}
    result = check_views("Postgres", ledger, bad, events, [win], shards=16)
    assert [m.key for m in result.check.mismatches] == ["post 1 views", "post 2 views"]
    assert (result.lost, result.doubled) == (2, 1)


def test_short_load_with_visitors_under_the_view_policy_accounts_exactly(tmp_path):
    proc = run_loadtest(tmp_path, "--users", "8", "--duration", "20s", "--visitors")
    assert verdict(proc).startswith("VERDICT: PASS"), verdict(proc)
    assert proc.returncode == 0
    assert re.search(
        r"unique_viewers \(after the final flush\) ~ distinct visitors: [1-9]", proc.stdout
    )


def test_ledger_counts_each_visitor_once_per_target_and_every_crawler_view(tmp_path):
    log = EventLog(tmp_path, "t")
    for visitor, tid, status in (
        ("a", 1, 204),
        ("a", 1, 200),  # a repeat: the pair counts once
        ("b", 1, 0),  # only unknown: maybe
        ("b", 2, None),
        ("b", 2, 204),  # acknowledged later: counts
        ("c", 1, 404),  # refused
    ):
        n = log.sent("view", "post", tid, 7, visitor)
        if status is not None:
            log.answered(n, status)
    for status in (204, 204, 0):
        log.answered(log.sent("bot_view", "post", 1, 7), status)
    log.close()
    ledger = build_ledger(read_events(tmp_path))
    views = ledger.expected[("view_count", "post", 1)]
    assert (views.lo, views.hi) == (1, 2)
    assert (ledger.expected[("view_count", "post", 2)].lo, ledger.viewers()[("post", 2)].lo) == (
        1,
        1,
    )
    bots = ledger.expected[("bot_view_count", "post", 1)]
    assert (bots.lo, bots.hi) == (2, 3)
    assert (ledger.viewers()[("post", 1)].lo, ledger.viewers()[("post", 1)].hi) == (1, 2)
