"""The opt-in coalescing of view beacons (COUNTERS_COALESCE_MS): views tallied in the
process and pushed in one round trip; 404s, Redis outages and shutdowns as documented."""

import signal
import time

import pytest

from harness.ports import free_port
from harness.processes import spawn, stop_all, wait_http
from harness.stack import web_command
from tests.app.conftest import REDIS_DB, assert_error, create, process_env
from tests.proxy import proxied
from tests.servers import redis_url

NEVER_MS = 3_600_000  # an interval the tests never wait for: pushes happen when they say


def views(counters, row_id: int) -> int:
    """The live view count: Postgres plus what Redis holds."""
    return counters.read("posts", [row_id])[row_id]["view_count"]


@pytest.fixture
def coalescing(make_app):
    """``coalescing(**config)``: an app with the mode on, its client and its coalescer."""

    def make(**config):
        app = make_app(COUNTERS_COALESCE_MS=config.pop("interval_ms", NEVER_MS), **config)
        return app.test_client(), app.extensions["counters"].coalescer

    return make


def test_views_of_a_known_row_wait_in_the_process_until_the_push(
    client, user, counters, coalescing
):
    post = create(client, user)
    page, coalescer = coalescing()
    assert page.post(f"/api/posts/{post}/view").status_code == 204  # first: synchronous
    assert views(counters, post) == 1
    for _ in range(5):
        assert page.post(f"/api/posts/{post}/view").status_code == 204
    assert views(counters, post) == 1  # tallied, not yet in Redis
    assert coalescer.push() == 5
    assert views(counters, post) == 6
    assert coalescer.push() == 0


def test_the_timer_pushes_on_its_own(client, user, counters, coalescing):
    post = create(client, user)
    page, _ = coalescing(interval_ms=20)
    for _ in range(10):
        assert page.post(f"/api/posts/{post}/view").status_code == 204
    deadline = time.monotonic() + 5
    while views(counters, post) < 10:
        assert time.monotonic() < deadline, "the background push never came"
        time.sleep(0.02)
    assert views(counters, post) == 10


def test_an_unknown_id_still_gets_its_404_and_leaves_nothing(coalescing, unchanged):
    page, coalescer = coalescing()
    with unchanged():
        for _ in range(3):
            assert_error(page.post("/api/posts/987654/view"), 404, "not_found")
        assert coalescer.push() == 0


def test_views_of_a_row_deleted_while_known_are_dropped_at_push(client, user, counters, coalescing):
    post = create(client, user)
    page, coalescer = coalescing()
    assert page.post(f"/api/posts/{post}/view").status_code == 204
    assert (
        client.delete(f"/api/posts/{post}", headers={"Authorization": f"Bearer {user}"}).status_code
        == 204
    )
    for _ in range(4):  # the row is still known to this process: 204, tallied
        assert page.post(f"/api/posts/{post}/view").status_code == 204
    coalescer.push()
    assert coalescer.dropped == 4
    assert_error(page.post(f"/api/posts/{post}/view"), 404, "not_found")  # forgotten


@pytest.fixture
def redis_proxy():
    proxy, url = proxied(redis_url(REDIS_DB), 6379)
    yield proxy, url
    proxy.close()


def test_redis_down_keeps_the_tally_and_turns_views_synchronous(
    client, user, counters, coalescing, redis_proxy
):
    proxy, url = redis_proxy
    post = create(client, user)
    page, coalescer = coalescing(COUNTERS_REDIS_URL=url)
    for _ in range(4):
        assert page.post(f"/api/posts/{post}/view").status_code == 204
    proxy.cut()
    assert coalescer.push() == 0  # failed: the 3 tallied views are kept
    reply = page.post(f"/api/posts/{post}/view")  # no longer tallied blindly
    assert_error(reply, 503, "unavailable")
    proxy.restore()
    assert coalescer.push() == 3
    assert page.post(f"/api/posts/{post}/view").status_code == 204  # tallied again
    assert coalescer.push() == 1
    assert views(counters, post) == 5


def test_a_push_whose_replies_are_lost_is_never_sent_again_and_counted_unknown(
    client, user, counters, coalescing, redis_proxy
):
    proxy, url = redis_proxy
    post = create(client, user)
    page, coalescer = coalescing(COUNTERS_REDIS_URL=url)
    for _ in range(4):
        assert page.post(f"/api/posts/{post}/view").status_code == 204
    # Redis runs the push's script, the proxy drops the connection before the reply
    proxy.lose_next_reply(lambda request: b"EVALSHA" in request)
    assert coalescer.push() == 0
    assert coalescer.push() == 0  # nothing is sent again: Redis did apply the first push
    assert views(counters, post) == 4
    assert coalescer.unknown == 3  # maybe counted: not sent twice, counted apart
    assert counters.shared_stats()["totals"]["views_unknown"] == 3
    assert page.post(f"/api/posts/{post}/view").status_code == 204  # tallied again
    assert views(counters, post) == 4 and coalescer.push() == 1
    assert views(counters, post) == 5


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_gunicorn_stopped_pushes_what_it_tallied(client, user, counters, app_db, stop):
    """A real gunicorn stopped gracefully (SIGTERM) or quickly (SIGINT, Ctrl-C): its
    workers push their tallies before they exit."""
    post = create(client, user)
    port = free_port()
    server = spawn(
        web_command(port, "--workers", "2", "--threads", "2", "--log-level", "warning"),
        env=process_env(app_db.url, COUNTERS_COALESCE_MS=str(NEVER_MS)),
    )
    try:
        import http.client

        # a view is never retried: a timeout after the request went out may have
        # counted it, and a retry would count it again
        wait_http(f"http://127.0.0.1:{port}/healthz", procs=[server])
        sent = 0
        while sent < 40:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            conn.request("POST", f"/api/posts/{post}/view")
            status = conn.getresponse().status
            conn.close()
            assert status == 204
            sent += 1
        # at most one synchronous view per worker; the rest wait in the workers
        assert views(counters, post) < sent
        server.send_signal(stop)
        assert server.wait(timeout=30) == 0
    finally:
        stop_all([server])
    assert views(counters, post) == sent


def test_a_push_after_redis_lost_the_existence_index_asks_postgres(
    client, user, counters, coalescing, r
):
    post = create(client, user)
    page, coalescer = coalescing()
    for _ in range(3):
        assert page.post(f"/api/posts/{post}/view").status_code == 204
    index = counters.keys.exists(counters.keys.shard_of(post), "posts")
    assert r.delete(index) == 1  # as after a Redis restart without persistence
    assert coalescer.push() == 2
    assert views(counters, post) == 3 and coalescer.dropped == 0
    assert counters.missing_indexes() == ["posts"]  # left to the rebuild task


def test_views_that_need_postgres_wait_while_it_is_unreachable(
    client, user, counters, coalescing, r, pg_proxy
):
    proxy, url = pg_proxy
    post = create(client, user)
    page, coalescer = coalescing(DATABASE_URL=url)
    for _ in range(4):
        assert page.post(f"/api/posts/{post}/view").status_code == 204
    r.delete(counters.keys.exists(counters.keys.shard_of(post), "posts"))
    proxy.cut()  # the push must ask Postgres whether the row exists, and cannot
    assert coalescer.push() == 0
    assert views(counters, post) == 1 and coalescer.dropped == 0
    proxy.restore()
    assert coalescer.push() == 3
    assert views(counters, post) == 4
