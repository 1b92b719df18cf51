"""Beat failover: two RedBeat beats share one lock; SIGKILL the one holding it and the
standby takes over within the lock timeout plus one beat loop, flushes keep running,
and no view is lost or counted twice."""

from __future__ import annotations

import os
import signal
import time

import pytest

from app.counters import counters
from tests.processes import log_text, wait_for
from tests.scale.conftest import (
    BEAT_CMD,
    PREFIX,
    QUEUE,
    Traffic,
    backlog,
    make_posts,
    stack_env,
    totals,
    views_in_postgres,
    worker_cmd,
)

BEAT_QUEUE = f"{QUEUE}-beat"
LOCK_KEY = f"redbeat:{PREFIX}::lock"  # RedBeat's default: <redbeat_key_prefix>:lock
FLUSH_INTERVAL_S = 1
LOOP_S = 2  # CELERY_BEAT_MAX_LOOP_INTERVAL
LOCK_TIMEOUT_S = 10  # CELERY_REDBEAT_LOCK_TIMEOUT
# process scheduling on a busy 2-core machine, and the poll below
TAKEOVER_SLACK_S = 3
ACQUIRED = "beat: Acquired lock"
SENT = "Sending due task flush-counters"


def flushes(app) -> int:
    return totals(app)["flushes"]


@pytest.mark.timeout(150)
def test_standby_beat_takes_over_after_sigkill_without_losing_or_doubling_a_flush(
    scale_app, app_db, processes, r
):
    app = scale_app(BEAT_QUEUE)
    posts = make_posts(app, 32)
    env = stack_env(
        app_db.url,
        BEAT_QUEUE,
        COUNTERS_FLUSH_INTERVAL=FLUSH_INTERVAL_S,
        COUNTERS_RECONCILE_INTERVAL=3600,
        CELERY_BEAT_MAX_LOOP_INTERVAL=LOOP_S,
        CELERY_REDBEAT_LOCK_TIMEOUT=LOCK_TIMEOUT_S,
    )
    worker, worker_log = processes.start("worker", worker_cmd(BEAT_QUEUE, "beatw", 2), env)
    beats = dict(processes.start(name, BEAT_CMD, env) for name in ("beat-a", "beat-b"))
    logs = [worker_log, *beats.values()]

    with Traffic(app, posts, threads=2) as traffic:
        # views before the failover
        active = wait_for(
            "one beat holds the lock",
            lambda: [p for p, log in beats.items() if ACQUIRED in log_text(log)],
            60,
            logs,
        )
        assert len(active) == 1, "both beats hold the lock"
        (active,) = active
        (standby,) = [p for p in beats if p is not active]
        assert r.exists(LOCK_KEY)
        start = flushes(app)
        wait_for("the active beat's flushes run", lambda: flushes(app) >= start + 3, 30, logs)
        assert ACQUIRED not in log_text(beats[standby])

        # views during the failover: the active beat dies without releasing its lock
        os.kill(active.pid, signal.SIGKILL)
        active.wait()
        killed_at = time.monotonic()
        assert r.pttl(LOCK_KEY) > 0  # a killed beat leaves its lock to expire
        bound_s = LOCK_TIMEOUT_S + LOOP_S + TAKEOVER_SLACK_S
        wait_for(
            "the standby beat takes the lock",
            lambda: ACQUIRED in log_text(beats[standby]),
            bound_s,
            logs,
        )
        takeover_s = time.monotonic() - killed_at
        assert takeover_s <= bound_s

        # views after: the standby sends the flushes now
        resumed = flushes(app)
        wait_for("flushes run again", lambda: flushes(app) >= resumed + 3, 30, logs)
        assert SENT in log_text(beats[standby]).split(ACQUIRED, 1)[1]
    assert traffic.failed == 0
    print(f"takeover after {takeover_s:.1f} s (bound {bound_s} s), {traffic.total} views")

    processes.stop(standby)
    processes.stop(worker)  # a warm shutdown: its running flushes finish
    last = counters.get(app).flush_all()  # the synchronous flush (admin, CLI)
    assert last.errors == [] and backlog(app) == 0
    assert views_in_postgres(app, posts) == {p: traffic.acked[p] for p in posts}
    assert totals(app)["batches_already_applied"] == 0
