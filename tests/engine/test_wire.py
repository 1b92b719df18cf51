"""The increment's lean connection (engine/wire.py) against real Redis servers: a script
the server lost is loaded and only that call sent again, a lost reply is never resent,
a connection Redis closed (CLIENT KILL, a restart) is replaced before anything is sent on
it, a forked child and every thread talk on connections of their own."""

import multiprocessing
import os
import signal
import threading

import pytest
import redis

from engine import BufferUnavailable, Counters
from engine.clients import redis_client
from engine.wire import Wire, command
from harness.redis_server import RedisProcess
from harness.round_trips import counting_round_trips
from tests.engine.conftest import REDIS_DB, REGISTRY, seed
from tests.engine.test_resend import script_call
from tests.proxy import TcpProxy
from tests.servers import redis_url


def hits(c: Counters, row: int) -> int:
    return c.read("items", [row])[row]["hits"]


@pytest.fixture
def server(tmp_path):
    proc = RedisProcess.rdb(tmp_path / "redis")
    proc.start()
    yield proc
    proc.stop()


@pytest.fixture
def on_server(server, sql):
    """Counters on a server of this test's own (so it may kill its clients, restart it)."""
    c = Counters(server.client(socket_timeout=1), sql, REGISTRY, shards=2)
    c.existence.ensure_loaded(["items"])
    yield c
    c.close()


def test_the_counter_client_of_a_single_redis_takes_the_wire(r, sql):
    c = Counters(redis_client(redis_url(REDIS_DB)), sql, REGISTRY, shards=2)
    assert c.buffer.wire is not None
    assert Wire.of(redis.Redis(ssl=True)) is None  # TLS keeps redis-py's path
    assert Wire.of(redis.Redis(protocol=3)) is None


def test_a_script_the_server_lost_is_loaded_and_the_view_sent_once_more(counters, r, sql):
    (i,) = seed(sql, "items", 1)
    counters.existence.ensure_loaded(["items"])
    assert counters.view("items.hits", i)
    r.script_flush()  # as after a restart or a failover: the next call answers NOSCRIPT
    assert counters.view("items.hits", i)
    assert counters.view("items.hits", i)
    assert hits(counters, i) == 3


def test_a_lost_reply_is_an_error_and_the_view_is_not_sent_again(r, sql):
    kw = r.connection_pool.connection_kwargs
    proxy = TcpProxy(kw.get("host", "127.0.0.1"), kw.get("port", 6379))
    try:
        c = Counters(redis_client(f"redis://127.0.0.1:{proxy.port}/{REDIS_DB}"), sql, REGISTRY)
        assert c.buffer.wire is not None
        (i,) = seed(sql, "items", 1)
        c.existence.ensure_loaded(["items"])
        assert c.view("items.hits", i)  # connected, script loaded
        proxy.lose_next_reply(script_call)
        with pytest.raises(BufferUnavailable):
            c.view("items.hits", i)
        assert proxy.replies_lost == 1
        assert hits(c, i) == 2  # Redis ran it once; it was not sent again
        assert c.view("items.hits", i)  # on a new connection
        assert hits(c, i) == 3
        c.close()
    finally:
        proxy.close()


def test_a_page_read_is_one_write_on_the_wire_and_a_lost_reply_is_never_resent(r, sql):
    """A page's view and read (the increment, the delta snapshot, the read model) go out
    pipelined on the lean connection; when the reply is lost, the page fails and the
    view, which Redis ran, is not sent again."""
    kw = r.connection_pool.connection_kwargs
    proxy = TcpProxy(kw.get("host", "127.0.0.1"), kw.get("port", 6379))
    try:
        c = Counters(redis_client(f"redis://127.0.0.1:{proxy.port}/{REDIS_DB}"), sql, REGISTRY)
        (i,) = seed(sql, "items", 1)
        c.existence.ensure_loaded(["items"])
        assert c.view_and_read("items.hits", i)[0]["hits"] == 1  # miss, then filled
        with counting_round_trips() as sent:
            counts, _ = c.view_and_read("items.hits", i)
        assert counts["hits"] == 2
        assert len(sent) == 1 and sent[0].count(b"EVALSHA") == 3  # one write, on the wire
        proxy.lose_next_reply(script_call)
        with pytest.raises(BufferUnavailable):
            c.view_and_read("items.hits", i)
        assert proxy.replies_lost == 1
        assert hits(c, i) == 3  # Redis ran it once; it was not sent again
        assert c.view_and_read("items.hits", i)[0]["hits"] == 4  # on a new connection
        c.close()
    finally:
        proxy.close()


def test_a_page_read_after_a_script_flush_counts_once_and_reads_live(counters, r, sql):
    (i,) = seed(sql, "items", 1)
    counters.existence.ensure_loaded(["items"])
    assert counters.view_and_read("items.hits", i)[0]["hits"] == 1
    assert counters.read_model_stats()["filled"] == 1
    r.script_flush()  # every script of the pipeline answers NOSCRIPT: none ran
    assert counters.view_and_read("items.hits", i)[0]["hits"] == 2
    assert counters.view_and_read("items.hits", i)[0]["hits"] == 3
    counters.flush_all()
    assert hits(counters, i) == 3


def test_a_pipeline_gives_every_reply_in_order_errors_in_place(r):
    wire = Wire.of(redis_client(redis_url(REDIS_DB)))
    big = os.urandom(200_000)  # replies longer than one read
    r.set("wire:big", big)
    try:
        replies = wire.pipeline(
            [
                command("GET", "wire:big"),
                command("EVALSHA", "0" * 40, 0),
                command("INCRBY", "wire:big", 1),
                command("GET", "wire:big"),
                command("PING"),
            ]
        )
    finally:
        r.delete("wire:big")
    assert replies[0] == big and replies[3] == big and replies[4] == b"PONG"
    assert isinstance(replies[1], redis.exceptions.NoScriptError)
    assert type(replies[2]) is redis.exceptions.ResponseError
    assert wire.pipeline([command("PING")]) == [b"PONG"]  # the connection is in step
    assert wire.pipeline([]) == []  # nothing to send: nothing to wait for
    wire.close()


def test_a_connection_redis_killed_is_replaced_before_the_next_view(server, on_server, sql):
    (i,) = seed(sql, "items", 1)
    assert on_server.view("items.hits", i)
    admin = server.client()
    assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
    assert on_server.view("items.hits", i)  # no error: the dead connection was never used
    assert hits(on_server, i) == 2


def test_views_go_on_after_a_redis_restart(server, on_server, sql):
    (i,) = seed(sql, "items", 1)
    assert on_server.view("items.hits", i)
    on_server.flush_all()
    server.kill()
    with pytest.raises(BufferUnavailable):
        on_server.view("items.hits", i)  # down: an error, not a hang
    server.wipe()  # back, empty: no scripts, no layout, no existence index
    assert on_server.view("items.hits", i)  # Postgres confirms the row
    on_server.flush_all()
    assert hits(on_server, i) == 2


def test_a_reply_later_than_the_socket_timeout_is_an_error_never_a_resend(server, on_server, sql):
    (i,) = seed(sql, "items", 1)
    assert on_server.view("items.hits", i)
    os.kill(server.proc.pid, signal.SIGSTOP)  # Redis takes the command but does not answer
    try:
        with pytest.raises(BufferUnavailable):
            on_server.view("items.hits", i)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    assert on_server.view("items.hits", i)
    assert hits(on_server, i) == 3  # the late one ran once, when Redis woke up


VIEWS_EACH = 200


def _child_views(c: Counters, row: int) -> None:
    try:
        for _ in range(VIEWS_EACH):
            assert c.view("items.hits", row)
    except BaseException:  # noqa: BLE001 - any failure is the answer
        os._exit(1)
    os._exit(0)


def test_a_forked_child_counts_on_its_own_connection(counters, sql):
    (i,) = seed(sql, "items", 1)
    counters.existence.ensure_loaded(["items"])
    assert counters.view("items.hits", i)  # the parent's connection is open
    fork = multiprocessing.get_context("fork")
    children = [fork.Process(target=_child_views, args=(counters, i)) for _ in range(2)]
    for p in children:
        p.start()
    for _ in range(VIEWS_EACH):  # the parent keeps counting meanwhile
        assert counters.view("items.hits", i)
    for p in children:
        p.join(60)
    assert [p.exitcode for p in children] == [0, 0]
    assert hits(counters, i) == 1 + 3 * VIEWS_EACH


def test_threads_count_on_connections_of_their_own(server, on_server, sql):
    ids = seed(sql, "items", 8)
    errors = []
    for i in ids:  # rows newer than the index: marked now, by redis-py's connection
        assert on_server.view("items.hits", i)
    admin = server.client()
    scripted = lambda: sum(c["cmd"] == "evalsha" for c in admin.client_list())  # noqa: E731
    before = scripted()

    counted, looked = threading.Barrier(len(ids) + 1), threading.Barrier(len(ids) + 1)

    def views(row: int) -> None:
        try:
            for _ in range(VIEWS_EACH):
                assert on_server.view("items.hits", row)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        counted.wait(60)
        looked.wait(60)  # a thread's connection closes when the thread ends

    threads = [threading.Thread(target=views, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    counted.wait(60)
    connections = scripted()
    looked.wait(60)
    for t in threads:
        t.join(60)
    assert errors == []
    assert connections == before + len(ids)  # one connection per thread
    expected = {i: {"hits": VIEWS_EACH + 1, "likes": 0} for i in ids}
    assert on_server.read("items", ids) == expected


def test_close_ends_every_threads_connection_and_counting_goes_on(server, on_server, sql):
    (i,) = seed(sql, "items", 1)
    admin = server.client()
    scripted = lambda: sum(c["cmd"] == "evalsha" for c in admin.client_list())  # noqa: E731
    opened, closed, done = threading.Event(), threading.Event(), threading.Event()

    def other_thread() -> None:
        assert on_server.view("items.hits", i)
        opened.set()
        closed.wait(60)
        assert on_server.view("items.hits", i)  # on a new connection
        done.set()

    assert on_server.view("items.hits", i)
    before = scripted()
    thread = threading.Thread(target=other_thread)
    thread.start()
    opened.wait(60)
    assert scripted() == before + 1
    on_server.buffer.wire.close()
    closed.set()
    thread.join(60)
    assert done.is_set()
    assert on_server.view("items.hits", i)
    assert hits(on_server, i) == 4


@pytest.mark.parametrize(
    ("row", "pairs", "table"),
    [(7, [("ih", 1)], "items"), (8, [("ih", 3), ("il", -1)], "items"), (9, [("nh", 2)], None)],
)
def test_the_packed_increment_is_the_script_call_the_buffer_lays_out(
    counters, monkeypatch, row, pairs, table
):
    """The keys and constant arguments packed once per shard make the same command as
    the script call ``_incr_call`` lays out (incr.lua's KEYS and ARGV)."""
    monkeypatch.setattr("engine.buffer.now_ms", lambda: 1_700_000_000_123)
    b = counters.buffer
    keys, args = b._incr_call(row, pairs, table)
    expected = command("EVALSHA", b._incr.sha, len(keys), *keys, *args)
    for _ in range(2):  # packed, then from the kept head
        assert b._incr_payload(row, pairs, table, None) == expected
