"""What the Redis behind the buffer keeps across a crash, and whether it may evict deltas.

Pending deltas live only in Redis until their flush, so its persistence decides the
loss window (docs/operations.md), and an eviction policy that can drop keys without a
TTL (``allkeys-*``) would drop pending hashes (acknowledged increments) and lineage
keys under memory pressure. On a Redis Cluster every primary is asked.
"""

from __future__ import annotations

from redis.exceptions import ResponseError

from .errors import UnsafeRedis, redis_errors

WAITAOF_SINCE = (7, 2)  # Redis version that added WAITAOF (every Valkey has it)


def primaries(redis) -> list[tuple[str, object]]:
    """``[(host:port, client)]`` of each primary (one for a plain ``redis.Redis``)."""
    if hasattr(redis, "get_primaries"):
        return [(n.name, redis.get_redis_connection(n)) for n in redis.get_primaries()]
    kw = redis.connection_pool.connection_kwargs
    name = f"{kw.get('host', 'localhost')}:{kw.get('port', 6379)}"
    if "path" in kw:
        name = kw["path"]
    return [(name, redis)]


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".")[:2] if p.isdigit())


def node_report(name: str, client) -> dict:
    info = client.info()
    try:
        fsync = client.config_get("appendfsync").get("appendfsync")
    except ResponseError:  # CONFIG renamed or denied (managed Redis): leave it unknown
        fsync = None
    version = str(info.get("redis_version", "0"))
    if isinstance(fsync, bytes):
        fsync = fsync.decode()
    return {
        "node": name,
        "server": info.get("server_name", "redis"),
        "version": str(info.get("valkey_version", version)),
        "aof": bool(int(info.get("aof_enabled", 0))),
        "appendfsync": fsync,
        "waitaof": _version(version) >= WAITAOF_SINCE,
        "maxmemory_policy": info.get("maxmemory_policy"),
    }


def report(redis) -> dict:
    """Per primary: server, version, AOF on/off, appendfsync, WAITAOF available,
    maxmemory-policy; and for all of them: ``aof`` and ``waitaof`` (every primary),
    ``evicts`` (any primary may evict keys without a TTL)."""
    with redis_errors("durability report"):
        nodes = [node_report(name, client) for name, client in primaries(redis)]
    return {
        "nodes": nodes,
        "aof": all(n["aof"] for n in nodes),
        "waitaof": all(n["waitaof"] for n in nodes),
        "evicts": any(str(n["maxmemory_policy"]).startswith("allkeys") for n in nodes),
    }


def check(redis, allow_eviction: bool = False) -> dict:
    """The :func:`report`; raises UnsafeRedis when a primary may evict pending deltas
    (``maxmemory-policy allkeys-*``) unless ``allow_eviction``."""
    found = report(redis)
    if found["evicts"] and not allow_eviction:
        bad = [
            f"{n['node']} ({n['maxmemory_policy']})"
            for n in found["nodes"]
            if str(n["maxmemory_policy"]).startswith("allkeys")
        ]
        raise UnsafeRedis(
            "Redis may evict pending counter deltas (keys without a TTL) under memory "
            f"pressure: maxmemory-policy on {', '.join(bad)}; use noeviction or a "
            "volatile-* policy, or allow_eviction=True to accept losing them"
        )
    return found
