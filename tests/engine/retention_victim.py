"""A retention run that SIGKILLs itself after a chosen chunk (for fault tests).

python -m tests.engine.retention_victim DB_URL REDIS_URL SHARDS STAGE@N NOW CHUNK

Dies right after the N-th commit of STAGE (windows, hours, days) of a retention run at
NOW (s since the epoch) moving at most CHUNK buckets per transaction.
"""

import os
import signal
import sys

import redis
import sqlalchemy as sa

from engine import Counters
from tests.engine.conftest import REGISTRY


def main() -> None:
    db_url, redis_url, shards, stage, now, chunk = sys.argv[1:7]
    stage, _, nth = stage.partition("@")
    reached = []

    def hook(at: str, n: int) -> None:
        if at == stage:
            reached.append(n)
            if len(reached) == int(nth or 1):
                os.kill(os.getpid(), signal.SIGKILL)

    counters = Counters(
        redis.Redis.from_url(redis_url),
        sa.create_engine(db_url),
        REGISTRY,
        shards=int(shards),
        hook=hook,
    )
    counters.retain(now=float(now), chunk_rows=int(chunk))
    sys.exit(3)  # unreachable when the stage is hit


if __name__ == "__main__":
    main()
