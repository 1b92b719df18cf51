"""Runtime schedules: the RedBeat flush and reconcile entries, read and changed through
the admin API and the CLI, followed by a running beat and kept across its restart."""

import json
import time
from contextlib import contextmanager
from datetime import timezone
from pathlib import Path

import pytest
from redbeat.schedulers import RedBeatSchedulerEntry

from engine import intervals
from engine.celery import schedule
from harness.processes import spawn, stop
from harness.stack import beat_command
from tests.app.conftest import ADMIN_TOKEN, PREFIX, assert_error, bearer, process_env

ADMIN = bearer(ADMIN_TOKEN)
URL = "/api/admin/counters/schedule"
FLUSH_KEY = f"redbeat:{PREFIX}:flush-counters"
LOCK_KEY = f"redbeat:{PREFIX}::lock"
BEAT_QUEUE = "celery"  # a beat started from the environment sends to Celery's default queue
WAIT_S = 30


def entry(app, name: str = intervals.FLUSH_ENTRY) -> RedBeatSchedulerEntry:
    celery = app.extensions["celery"]
    return RedBeatSchedulerEntry.from_key(f"redbeat:{PREFIX}:{name}", app=celery)


def by_kind(schedule: dict) -> dict:
    return {e["kind"]: e for e in schedule["entries"]}


def test_get_before_any_beat_shows_the_configured_intervals(make_app, r):
    client = make_app(COUNTERS_FLUSH_INTERVAL=3, COUNTERS_RECONCILE_INTERVAL=600).test_client()
    response = client.get(URL, headers=ADMIN)
    assert response.status_code == 200
    body = response.json
    assert body["flush_interval"] == 3 and body["reconcile_interval"] == 600
    flush = by_kind(body)["flush"]
    assert flush["name"] == "flush-counters" and flush["source"] == "config"
    assert flush["in_redis"] is False and flush["next_run_at"] is None
    assert not r.exists(FLUSH_KEY)  # reading creates nothing


def test_put_updates_the_redbeat_entry_and_stores_the_override(make_app, r):
    app = make_app(COUNTERS_FLUSH_INTERVAL=3, COUNTERS_RECONCILE_INTERVAL=600)
    client = app.test_client()
    response = client.put(URL, json={"flush_interval": 7.5}, headers=ADMIN)
    assert response.status_code == 200, response.json
    body = response.json
    assert body["flush_interval"] == 7.5 and body["reconcile_interval"] == 600
    flush = by_kind(body)["flush"]
    assert flush["source"] == "runtime" and flush["in_redis"] is True
    assert flush["configured_interval_s"] == 3 and flush["expires_s"] == 7.5
    assert flush["task"] == "counters.flush" and flush["next_run_at"]
    saved = entry(app)
    assert saved.schedule.run_every.total_seconds() == 7.5
    assert saved.options["expires"] == 7.5
    assert r.hgetall(f"redbeat:{PREFIX}::counters-intervals") == {b"flush": b"7.5"}

    both = client.put(URL, json={"flush_interval": 1, "reconcile_interval": 120}, headers=ADMIN)
    assert (both.json["flush_interval"], both.json["reconcile_interval"]) == (1, 120)
    assert entry(app, intervals.RECONCILE_ENTRY).options["expires"] == 120


def test_a_changed_interval_keeps_the_last_run(make_app):
    app = make_app()
    client = app.test_client()
    client.put(URL, json={"flush_interval": 60}, headers=ADMIN)
    first = entry(app).last_run_at
    client.put(URL, json={"flush_interval": 30}, headers=ADMIN)
    saved = entry(app)
    assert saved.last_run_at == first and saved.schedule.run_every.total_seconds() == 30
    due = schedule.next_run(saved)
    assert abs((due - (first + saved.schedule.run_every)).total_seconds()) < 0.01
    shown = by_kind(client.get(URL, headers=ADMIN).json)["flush"]["next_run_at"]
    assert shown == due.astimezone(timezone.utc).isoformat(timespec="milliseconds")


def test_the_stored_override_is_read_when_celery_is_configured(make_app):
    app = make_app(COUNTERS_FLUSH_INTERVAL=3)
    app.test_client().put(URL, json={"flush_interval": 9}, headers=ADMIN)
    later = make_app(COUNTERS_FLUSH_INTERVAL=3)  # a beat or worker starting now
    celery = later.extensions["celery"]
    assert not celery.configured  # create_app asked Redis nothing
    flush = celery.conf.beat_schedule["flush-counters"]
    assert flush["schedule"] == 9 and flush["options"]["expires"] == 9
    assert celery.conf.beat_schedule["reconcile-counters"]["schedule"] == 3600


def test_without_redis_celery_falls_back_to_the_configured_schedule(make_app):
    app = make_app(REDIS_URL="redis://127.0.0.1:1/15", COUNTERS_FLUSH_INTERVAL=4)
    assert app.extensions["celery"].conf.beat_schedule["flush-counters"]["schedule"] == 4


def test_schedule_endpoints_answer_503_without_redis(make_app):
    client = make_app(REDIS_URL="redis://127.0.0.1:1/15").test_client()
    assert_error(client.get(URL, headers=ADMIN), 503, "unavailable")
    assert_error(client.put(URL, json={"flush_interval": 5}, headers=ADMIN), 503)


@pytest.mark.parametrize(
    "body",
    [
        {},
        [],
        "5",
        {"flush_interval": 0},
        {"flush_interval": -1},
        {"flush_interval": 0.1},
        {"flush_interval": 10**9},
        {"flush_interval": "5"},
        {"flush_interval": True},
        {"flush_interval": None},
        {"reconcile_interval": 1},
        {"flush_interval": 5, "reconcile_interval": 0},
        {"flush_interval": 5, "beat": 1},
        {"interval": 5},
    ],
)
def test_put_refuses_what_is_not_a_sane_interval(client, r, body):
    assert_error(client.put(URL, json=body, headers=ADMIN), 400)
    assert not r.exists(FLUSH_KEY) and not r.exists(f"redbeat:{PREFIX}::counters-intervals")


@pytest.mark.parametrize("raw", [b"{", b'{"flush_interval": NaN}', b'{"flush_interval": Infinity}'])
def test_put_refuses_bad_json_and_non_finite_numbers(client, raw):
    response = client.put(URL, data=raw, headers=ADMIN, content_type="application/json")
    assert_error(response, 400)


def test_schedule_needs_the_admin_token(client, user):
    assert_error(client.get(URL), 401)
    assert_error(client.put(URL, json={"flush_interval": 5}, headers=bearer(user)), 401)


def cli(app, *args):
    return app.test_cli_runner().invoke(args=["counters", "schedule", *args])


def test_cli_lists_sets_and_resets_the_schedule(make_app):
    app = make_app(COUNTERS_FLUSH_INTERVAL=2, COUNTERS_RECONCILE_INTERVAL=3600)
    listed = cli(app)
    assert listed.exit_code == 0, listed.output
    assert "flush-counters: every 2 s (from the config); not in Redis yet" in listed.output
    assert "reconcile-counters: every 3600 s" in listed.output

    changed = cli(app, "set", "flush", "5")
    assert changed.exit_code == 0, changed.output
    assert "flush-counters: every 5 s (set at runtime), next run 20" in changed.output
    assert entry(app).schedule.run_every.total_seconds() == 5
    as_json = json.loads(cli(app, "--json").output)
    assert as_json["flush_interval"] == 5

    reset = cli(app, "reset", "flush")
    assert reset.exit_code == 0, reset.output
    assert "flush-counters: every 2 s (from the config)" in reset.output
    assert entry(app).options["expires"] == 2


@pytest.mark.parametrize(
    "args", [("set", "flush", "0"), ("set", "flush", "x"), ("set", "beat", "5"), ("set", "flush")]
)
def test_cli_refuses_bad_intervals(app, args):
    result = cli(app, *args)
    assert result.exit_code == 2, result.output
    assert entry_missing(app)


def entry_missing(app) -> bool:
    try:
        entry(app)
    except KeyError:
        return True
    return False


# -- a real beat process ------------------------------------------------------


def sent_by(r, pid: int, task: str = "counters.flush") -> list[bytes]:
    """The messages a beat process sent to the broker queue, told apart from those of any
    other run's beat by their ``origin`` header (``gen<pid>@<host>``)."""
    mine = []
    for raw in r.lrange(BEAT_QUEUE, 0, -1):
        headers = json.loads(raw).get("headers") or {}
        if str(headers.get("origin", "")).startswith(f"gen{pid}@") and headers["task"] == task:
            mine.append(raw)
    return mine


def wait_for(what: str, check, log: Path, timeout_s: float = WAIT_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    pytest.fail(f"not within {timeout_s} s: {what}\n--- beat log ---\n{tail}")


@contextmanager
def beat(env: dict, log: Path, r):
    """``celery beat`` with RedBeat as a subprocess; stopped with SIGTERM (its lock is
    released), and every message it sent is taken off the shared broker queue."""
    proc = spawn(beat_command("--loglevel=debug"), cwd=log.parent, env=env, output=log)
    try:
        yield proc
    finally:
        stop(proc, WAIT_S)
        for task in ("counters.flush", "counters.reconcile"):
            for raw in sent_by(r, proc.pid, task):
                r.lrem(BEAT_QUEUE, 0, raw)


@pytest.mark.timeout(180)
def test_running_beat_follows_a_new_interval_and_keeps_it_after_a_restart(
    app_db, make_app, r, tmp_path
):
    app = make_app(COUNTERS_FLUSH_INTERVAL=3600, COUNTERS_RECONCILE_INTERVAL=3600)
    client = app.test_client()
    env, log = (
        process_env(app_db.url, COUNTERS_FLUSH_INTERVAL="3600", COUNTERS_RECONCILE_INTERVAL="3600"),
        tmp_path / "beat.log",
    )

    with beat(env, log, r) as first:
        wait_for("beat saved its entries and holds the lock", lambda: r.exists(LOCK_KEY), log)
        assert client.get(URL, headers=ADMIN).json["flush_interval"] == 3600
        assert len(sent_by(r, first.pid)) == 0  # the next flush is an hour away

        response = client.put(URL, json={"flush_interval": 1}, headers=ADMIN)
        assert response.status_code == 200 and response.json["flush_interval"] == 1
        wait_for("3 flushes sent at the new rate", lambda: len(sent_by(r, first.pid)) >= 3, log)
    assert first.returncode is not None and not r.exists(LOCK_KEY)

    # a new beat saves its static schedule (3600 s) at start: the override must win
    with beat(env, log, r) as second:
        wait_for("the restarted beat holds the lock", lambda: r.exists(LOCK_KEY), log)
        assert entry(app).schedule.run_every.total_seconds() == 1
        assert entry(app).options["expires"] == 1
        wait_for("flushes sent after the restart", lambda: len(sent_by(r, second.pid)) >= 2, log)
        schedule = by_kind(client.get(URL, headers=ADMIN).json)["flush"]
        assert schedule["interval_s"] == 1 and schedule["total_run_count"] >= 2
