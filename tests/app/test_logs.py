"""Structured logs: one JSON line per shard batch, per flush and per reconcile, as a real
Celery worker writes them."""

import json
import logging
import os
import sys

import pytest

from engine.logs import JsonLineFormatter, use_json_lines
from harness.processes import spawn, stop
from harness.stack import worker_command
from tests.app.conftest import ADMIN_TOKEN, PREFIX, QUEUE, RUN, act, bearer, create, process_env

TASK_TIMEOUT_S = 60


def record(name: str, msg: str, *args, level=logging.INFO, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)


def test_structured_records_become_one_json_line():
    fmt = JsonLineFormatter(logging.Formatter("[%(levelname)s] %(message)s"))
    batch = json.dumps({"event": "counter_flush", "shard": 3, "seq": 17, "counters": 2})
    line = fmt.format(record("engine.flush", "%s", batch))
    parsed = json.loads(line)
    assert parsed["event"] == "counter_flush" and parsed["seq"] == 17
    assert parsed["logger"] == "engine.flush" and parsed["level"] == "INFO"
    assert parsed["ts"].endswith("+00:00") and parsed["pid"] == os.getpid()
    # a plain message of a structured logger is still one JSON object
    plain = json.loads(fmt.format(record("engine.flush", "dropped %d rows", 2)))
    assert plain["message"] == "dropped 2 rows"
    # anything else keeps the worker's own format
    assert fmt.format(record("celery.worker", "ready")) == "[INFO] ready"
    assert fmt.format(record("engineering", "x")) == "[INFO] x"


def test_a_traceback_stays_on_the_line():
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        rec = record(
            "engine.counters", "flush failed", level=logging.ERROR, exc_info=sys.exc_info()
        )
    line = JsonLineFormatter().format(rec)
    assert "\n" not in line
    parsed = json.loads(line)
    assert "RuntimeError: boom" in parsed["exc"] and parsed["message"] == "flush failed"


def test_after_setup_logger_wraps_the_handlers_once():
    logger = logging.Logger("root-like")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    use_json_lines(logger)
    use_json_lines(logger)
    assert isinstance(handler.formatter, JsonLineFormatter)
    assert not isinstance(handler.formatter.fallback, JsonLineFormatter)


def test_app_logs_one_json_line_per_flush_and_reconcile(client, user, caplog):
    post = create(client, user)
    client.post(f"/api/posts/{post}/view")
    with caplog.at_level(logging.INFO):
        client.post("/api/admin/counters/flush", headers=bearer(ADMIN_TOKEN))
        client.post("/api/admin/counters/reconcile", headers=bearer(ADMIN_TOKEN))
    events = {}
    for rec in caplog.records:
        if rec.name.startswith("engine") and rec.getMessage()[:1] == "{":
            parsed = json.loads(rec.getMessage())
            events.setdefault(parsed["event"], []).append(parsed)
    assert len(events["flush"]) == len(events["counter_reconcile"]) == 1  # logged once
    assert len(events["counter_flush"]) == 1 and "reconcile" not in events
    assert events["flush"][0]["flushed"] == 1
    reconciled = events["counter_reconcile"][0]
    assert reconciled["checked"] == 4 and reconciled["duration_s"] >= 0


@pytest.mark.timeout(180)
def test_worker_writes_flush_and_reconcile_as_single_json_lines(
    app, app_db, client, user, tmp_path
):
    post, gone = create(client, user), create(client, user)
    for _ in range(3):
        client.post(f"/api/posts/{post}/view")
    act(client, user, "like", "post", post)
    client.post(f"/api/posts/{gone}/view")
    assert client.delete(f"/api/posts/{gone}", headers=bearer(user)).status_code == 204
    log = tmp_path / "worker.log"
    worker = spawn(
        worker_command("-Q", QUEUE, "-c", "1", "-n", f"logs-{RUN}@%h", "--loglevel=info")
        + ["--without-mingle", "--without-gossip", "--without-heartbeat"],
        cwd=tmp_path,
        env=process_env(app_db.url),
        output=log,
    )
    celery = app.extensions["celery"]
    try:
        flushed = celery.send_task("counters.flush").get(timeout=TASK_TIMEOUT_S)
        reconciled = celery.send_task("counters.reconcile").get(timeout=TASK_TIMEOUT_S)
    finally:
        stop(worker, TASK_TIMEOUT_S)
    assert flushed["flushed"] == 3 and flushed["rows_missing"] == 1
    lines = log.read_text().splitlines()
    structured = [json.loads(line) for line in lines if line.startswith("{")]
    by_event: dict[str, list[dict]] = {}
    for entry in structured:
        by_event.setdefault(entry.get("event"), []).append(entry)
    # every record of these events is a whole line of JSON, never inside a Celery prefix
    for event in ("counter_flush", "flush", "counter_reconcile"):
        mentions = [line for line in lines if f'"event": "{event}"' in line]
        assert mentions and all(line.startswith("{") for line in mentions), (event, lines[-40:])

    batches = {b["shard"]: b for b in by_event["counter_flush"]}
    assert sorted(batches) == sorted({post % 4, gone % 4}), by_event["counter_flush"]
    for batch in batches.values():
        assert batch["logger"] == "engine.flush" and batch["level"] == "INFO"
        assert batch["scope"] == PREFIX and isinstance(batch["seq"], int)
        assert batch["duration_s"] >= 0
    assert batches[post % 4]["counters"] == 2 and batches[post % 4]["rows_missing"] == 0
    assert batches[gone % 4]["counters"] == 1 and batches[gone % 4]["rows_missing"] == 1
    (flush,) = by_event["flush"]
    assert flush["logger"] == "engine.counters" and flush["scope"] == PREFIX
    assert flush["flushed"] == 3 and flush["batches"] == 2 and flush["rows_missing"] == 1
    assert flush["duration_s"] >= 0 and flush["errors"] == []
    assert "reconcile" not in by_event  # a reconcile is logged once, by the engine
    (reconcile,) = by_event["counter_reconcile"]
    assert reconcile["checked"] == reconciled["checked"] and reconcile["fixed"] == 0
    assert reconcile["duration_s"] >= 0 and reconcile["counters"] is None
