"""An increment whose reply is lost is never sent again: a TCP proxy passes the command
to Redis and closes the connection before the reply gets back. Redis applied it; the
caller gets BufferUnavailable (it cannot know), and nothing is applied twice."""

import re

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from engine import BufferUnavailable, Counters
from engine.clients import command_retries, redis_client
from tests.engine.conftest import REDIS_DB, REGISTRY, seed
from tests.proxy import TcpProxy

CALLS = {
    "incr": lambda c, i: c.incr("items.hits", i, 10),
    "incr_many": lambda c, i: c.incr_many([("items.hits", i, 10)]),
    "incr_checked": lambda c, i: c.incr_checked([("items.hits", i, 10)]),
    "incr_if_exists": lambda c, i: c.incr_if_exists("items.hits", i, 10),
    "bump_and_read": lambda c, i: c.bump_and_read("items.hits", i),
}
ADDED = {"bump_and_read": 1}


def script_call(request: bytes) -> bool:
    """Requests that run a script (not, say, a cluster client's COMMAND GETKEYS lookup)."""
    return re.match(rb"\*\d+\r\n\$7\r\nEVALSHA\r\n", request) is not None


def ambiguous(call) -> str:
    try:
        call()
    except BufferUnavailable:
        return "unavailable"
    return "answered"


@pytest.fixture
def proxy(r):
    kw = r.connection_pool.connection_kwargs
    proxy = TcpProxy(kw.get("host", "127.0.0.1"), kw.get("port", 6379))
    yield proxy
    proxy.close()


@pytest.mark.parametrize("call", sorted(CALLS))
def test_an_increment_whose_reply_is_lost_is_applied_once(call, proxy, r, sql):
    client = redis_client(f"redis://127.0.0.1:{proxy.port}/{REDIS_DB}")
    counters = Counters(client, sql, REGISTRY, shards=2)
    (i,) = seed(sql, "items", 1)
    counters.existence.ensure_loaded(["items"])
    CALLS[call](counters, i)  # the connection is open and the scripts are loaded
    proxy.lose_next_reply(script_call)
    outcome = ambiguous(lambda: CALLS[call](counters, i))
    assert proxy.replies_lost == 1
    added = ADDED.get(call, 10)
    assert counters.read("items", [i])[i]["hits"] == 2 * added  # not 3: sent once
    assert outcome == "unavailable"
    CALLS[call](counters, i)  # a new connection, as usual
    counters.flush_all()
    assert counters.read("items", [i])[i]["hits"] == 3 * added


def test_the_counter_client_makes_no_command_retries(caplog):
    assert command_retries(redis_client("redis://127.0.0.1:1/0")) == 0
    forced = redis_client("redis://127.0.0.1:1/0", retry=Retry(NoBackoff(), 5), socket_timeout=1)
    assert command_retries(forced) == 0
    assert forced.connection_pool.connection_kwargs["socket_timeout"] == 1
    assert command_retries(redis.Redis(port=1)) > 0  # redis-py's own default


def test_a_client_that_resends_is_warned_about(sql, caplog):
    Counters(redis_client("redis://127.0.0.1:1/0"), sql, REGISTRY)
    assert "sends a command again" not in caplog.text
    Counters(redis.Redis(port=1), sql, REGISTRY)
    assert "sends a command again" in caplog.text
