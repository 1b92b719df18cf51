"""The view spool under fire: a real gunicorn with COUNTERS_COALESCE_SPOOL_DIR takes
views from several clients while its workers are SIGKILLed (gunicorn starts new ones);
after a graceful stop and a flush, Postgres has every acknowledged view exactly once."""

import http.client
import os
import signal
import threading
import time
from collections import Counter

from engine import spool as spooling
from harness.ports import free_port
from harness.processes import spawn, stop_all, wait_http
from harness.stack import web_command
from tests.app.conftest import create, process_env, stored
from tests.processes import wait_for

POSTS = 6
CLIENTS = 6
WORKERS = 3
KILLS = 5
PER_CLIENT_MAX = 4_000  # requests per client at most; the load also stops after the kills
KILL_EVERY_S = 0.7
# long enough that each kill catches views only its spool holds (they would be lost without)
INTERVAL_MS = 300
ENOUGH = 300  # views answered at least (the load goes on after the kills until then)
LOAD_MAX_S = 60


def workers(master: int) -> list[int]:
    """The pids of gunicorn's workers (the master's children)."""
    try:
        with open(f"/proc/{master}/task/{master}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


class Client(threading.Thread):
    """Sends views one connection each, never retried; records what it was told."""

    def __init__(self, port: int, posts: list[int], stop: threading.Event, n: int) -> None:
        super().__init__(daemon=True)
        self.port, self.posts, self.stop, self.n = port, posts, stop, n
        self.acked: Counter = Counter()  # 204s
        self.unanswered: Counter = Counter()  # sent, no reply: may or may not count
        self.other: Counter = Counter()  # any other status

    def run(self) -> None:
        for i in range(PER_CLIENT_MAX):
            if self.stop.is_set():
                return
            post = self.posts[(i + self.n) % len(self.posts)]
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                conn.request("POST", f"/api/posts/{post}/view")
                status = conn.getresponse().status
            except (OSError, http.client.HTTPException):
                self.unanswered[post] += 1
                continue
            finally:
                conn.close()
            if status == 204:
                self.acked[post] += 1
            else:
                self.other[(post, status)] += 1


def test_sigkilled_workers_lose_no_acknowledged_view_and_double_none(
    client, user, counters, sql, app_db, tmp_path
):
    posts = [create(client, user, title=f"Post {i}") for i in range(POSTS)]
    directory = tmp_path / "spool"
    port = free_port()
    log = tmp_path / "web.log"
    server = spawn(
        web_command(port, "--workers", str(WORKERS), "--threads", "4", "--log-level", "warning"),
        env=process_env(
            app_db.url,
            COUNTERS_COALESCE_MS=str(INTERVAL_MS),
            COUNTERS_COALESCE_SPOOL_DIR=str(directory),
        ),
        output=log,
    )
    stop = threading.Event()
    clients = [Client(port, posts, stop, n) for n in range(CLIENTS)]
    killed = []
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", procs=[server])
        wait_for("every worker up", lambda: len(workers(server.pid)) == WORKERS, 60, [log])
        for c in clients:
            c.start()
        for _ in range(KILLS):
            time.sleep(KILL_EVERY_S)
            victim = workers(server.pid)[0]
            os.kill(victim, signal.SIGKILL)
            killed.append(victim)
            wait_for(
                "gunicorn to start a new worker",
                lambda v=victim: (
                    len(workers(server.pid)) == WORKERS and v not in workers(server.pid)
                ),
                60,
                [log],
            )
        # and on until enough views were answered, on a machine as slow as it may be
        deadline = time.monotonic() + LOAD_MAX_S
        while sum(sum(c.acked.values()) for c in clients) < ENOUGH and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        for c in clients:
            c.join(timeout=60)
        stopped = not stop_all([server])
    assert stopped, log.read_text()[-3000:]  # a graceful stop: the workers push and exit
    acked, unanswered, other = Counter(), Counter(), Counter()
    for c in clients:
        acked.update(c.acked)
        unanswered.update(c.unanswered)
        other.update(c.other)
    assert other == Counter(), other
    assert sum(acked.values()) >= ENOUGH, (acked, unanswered)
    # spools of workers killed last may be left: nothing else runs now to take them
    spooling.drain(counters, directory)
    assert list(directory.glob(f"*{spooling.SUFFIX}")) == []
    counters.flush_all()
    for post in posts:
        counted = stored(sql, "posts", "view_count", post)
        assert acked[post] <= counted <= acked[post] + unanswered[post], (
            post,
            counted,
            acked[post],
            unanswered[post],
        )
