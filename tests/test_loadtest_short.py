"""The load test, short: ``python -m loadtests run`` must end with an exact accounting.

A few Locust users for about 20 s against gunicorn + a Celery worker + RedBeat beat on
127.0.0.1, then the same with the worker SIGKILLed several times and beat restarted
once. The runner creates (and drops) its own scratch database and flushes only its
own Redis db; it exits 0 only when every counter in Postgres equals what the API
acknowledged and its exact recount, with no failed request. All traffic goes to
127.0.0.1 and stops by itself; every wait is bounded.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from loadtests.accounting import EventLog, build_ledger, compare, read_events
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
