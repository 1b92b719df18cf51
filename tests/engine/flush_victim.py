"""A flushing process that SIGKILLs itself at a chosen flush stage (for fault tests).

python -m tests.engine.flush_victim DB_URL REDIS_URL SHARDS STAGE[@N] [MAX_FIELDS] [policy]
    [apart] [cluster]

``STAGE@N`` dies at the N-th time the stage is reached (default: the first);
``MAX_FIELDS`` bounds its batches (``claim_max_fields``); with ``policy`` it flushes the
registry with a view policy too (``POLICY_REGISTRY``); with ``apart`` every shard
flushes in a transaction of its own (``combine_max_fields=0``), else a small flush goes
in one (engine/flush_combined.py); with ``cluster``, REDIS_URL names a node of a Redis
Cluster.
"""

import os
import signal
import sys

import redis
import sqlalchemy as sa
from redis.cluster import RedisCluster

from engine import Counters
from tests.engine.conftest import POLICY_REGISTRY, REGISTRY

VICTIM_LOCK_TTL_MS = 300  # the flush lock a killed victim leaves expires this fast


def main() -> None:
    db_url, redis_url, shards, stage = sys.argv[1:5]
    rest = sys.argv[5:]
    cluster = rest[-1:] == ["cluster"]
    options = {"claim_max_fields": int(rest[0])} if rest[:1] and rest[0].isdigit() else {}
    if "apart" in rest:
        options["combine_max_fields"] = 0
    client_class = RedisCluster if cluster else redis.Redis
    stage, _, nth = stage.partition("@")
    reached = []

    def hook(at: str, shard: int) -> None:
        if at == stage:
            reached.append(at)
            if len(reached) == int(nth or 1):
                os.kill(os.getpid(), signal.SIGKILL)

    counters = Counters(
        client_class.from_url(redis_url),
        sa.create_engine(db_url),
        POLICY_REGISTRY if "policy" in rest else REGISTRY,
        shards=int(shards),
        hook=hook,
        flush_lock_ttl_ms=VICTIM_LOCK_TTL_MS,
        **options,
    )
    counters.flush_all()
    sys.exit(3)  # unreachable when the stage is hit


if __name__ == "__main__":
    main()
