"""The Redis client for the counter buffer: a command is never sent twice.

redis-py sends a command again when its connection breaks or times out: ``redis.Redis``
built with its constructor retries up to 10 times, ``RedisCluster`` 3 times, and a
cluster pipeline sends each command of a node whose connection broke once more. For a
read that is harmless. For an increment it is not: when Redis ran the command and only
the reply was lost (a connection cut, a timeout, a failover), the resend adds the
deltas a second time. So the counter client makes no command retries: a lost reply
surfaces as ``BufferUnavailable`` (a 503). That is the honest answer, since the
increment may or may not have been counted, and the caller decides what to do.

Cluster redirections (MOVED, ASK) stay on: Redis refused those commands without running
them, so following them is safe. The engine's own pipelines on a cluster follow them
too and never resend on a connection error (engine.buffer.RoundTrip). Its other calls
(claim, number, release, the live read's snapshot) are safe to repeat, but they are not
retried either: a flush that fails is resumed by the next one, a read is asked again.
"""

from __future__ import annotations

from redis import Redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

CONNECT_TIMEOUT_S = 2.0
SOCKET_TIMEOUT_S = 10.0


def no_retries() -> Retry:
    return Retry(NoBackoff(), 0)


def redis_client(url: str, cluster: bool = False, **options) -> Redis | RedisCluster:
    """A client for ``Counters``: ``redis.Redis``, or ``RedisCluster`` when ``cluster``,
    with connect/socket timeouts of 2 s / 10 s unless given, and no command retries
    (whatever ``options`` say). Other ``options`` go to redis-py's ``from_url``."""
    options.setdefault("socket_connect_timeout", CONNECT_TIMEOUT_S)
    options.setdefault("socket_timeout", SOCKET_TIMEOUT_S)
    options["retry"] = no_retries()
    if cluster:
        return RedisCluster.from_url(url, **options)
    return Redis.from_url(url, **options)


def command_retries(client) -> int:
    """How many times ``client`` would send a command again after a connection error."""
    if isinstance(client, RedisCluster):
        return client.retry.get_retries()
    kw = client.connection_pool.connection_kwargs
    if kw.get("retry") is not None:
        return kw["retry"].get_retries()
    # redis-py builds a one-retry policy for these when no Retry is given
    return 1 if kw.get("retry_on_timeout") or kw.get("retry_on_error") else 0
