"""The Redis client of the counter buffer."""

from __future__ import annotations

import redis
import redis.cluster

CONNECT_TIMEOUT_S = 2.0
SOCKET_TIMEOUT_S = 10.0


def redis_client(url: str, cluster: bool = False, **options):
    """A ``redis.Redis`` (or, with ``cluster``, a ``RedisCluster``) for ``Counters``."""
    options = {
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "socket_timeout": SOCKET_TIMEOUT_S,
        **options,
    }
    if cluster:
        return redis.cluster.RedisCluster.from_url(url, **options)
    return redis.Redis.from_url(url, **options)
