"""Postgres and Redis for one run: the environment's, or scratch ones this run owns.

``DATABASE_URL`` / ``REDIS_URL`` are used as given: never dropped or flushed.

Unset, the run creates a database ``ctrload_<random>`` through
``LOADTEST_PG_ADMIN_URL`` and drops it at the end, and *claims* a Redis db on
``LOADTEST_REDIS_URL`` (default ``redis://127.0.0.1:6379``): the first of
``LOADTEST_REDIS_DBS`` (default 10, 11, 12, 9, 8) whose claim key it can set
(``harness.redis_claim``). Only a claimed db is ever flushed.

With ``counter_redis_dir`` (``--redis-rollback``) the counter buffer gets a redis-server
of the run's own, with RDB snapshots in that folder (``COUNTERS_REDIS_URL``), which the
run may SIGKILL and restart from its dump; the broker and RedBeat stay on ``REDIS_URL``.
"""

from __future__ import annotations

import os
from pathlib import Path

import redis

from harness.redis_claim import RedisClaim
from harness.redis_server import RedisProcess
from harness.scratch import ScratchDatabase, scratch_name
from harness.servers import DEFAULT_PG, DEFAULT_REDIS, from_env

REDIS_DBS = "10,11,12,9,8"  # the app's tests use 15, the engine's 14, the benchmarks 13
COUNTER_REDIS_SAVE = "3 1"  # an ordinary RDB schedule: a snapshot 3 s after any change


class Servers:
    """See the module docstring; a context manager that cleans up what it created."""

    def __init__(self, counter_redis_dir: Path | None = None) -> None:
        self.database_url = os.environ.get("DATABASE_URL")
        self.redis_url = os.environ.get("REDIS_URL")
        self.scratch: ScratchDatabase | None = None
        self.claim: RedisClaim | None = None
        self.counter_redis_dir = counter_redis_dir
        self.counter_redis: RedisProcess | None = None

    @property
    def counters_redis_url(self) -> str | None:
        return self.counter_redis.url if self.counter_redis is not None else None

    @property
    def scratch_db(self) -> str | None:
        return self.scratch.name if self.scratch is not None else None

    def __enter__(self) -> Servers:
        if self.redis_url:
            self._refuse_stale_deltas()
        else:
            server = from_env("LOADTEST_REDIS_URL", default=DEFAULT_REDIS)
            dbs = [int(x) for x in os.environ.get("LOADTEST_REDIS_DBS", REDIS_DBS).split(",")]
            self.claim = RedisClaim(server, dbs)
            self.claim.flush()
            self.claim.start_refreshing()
            self.redis_url = self.claim.url
        try:
            if self.counter_redis_dir is not None:
                self.counter_redis = RedisProcess.rdb(self.counter_redis_dir, COUNTER_REDIS_SAVE)
                self.counter_redis.start()
            if not self.database_url:
                admin_url = from_env("LOADTEST_PG_ADMIN_URL", default=DEFAULT_PG)
                self.scratch = ScratchDatabase(admin_url, scratch_name("ctrload"))
                self.database_url = self.scratch.url
        except BaseException:
            self.__exit__()
            raise
        return self

    @property
    def redis_lost(self) -> bool:
        """True when our claimed db was flushed or taken by someone else during the run."""
        return self.claim is not None and self.claim.lost

    def _refuse_stale_deltas(self) -> None:
        # Deltas left by an earlier run would land on this run's rows (ids restart at 1).
        with redis.Redis.from_url(self.redis_url) as r:
            for pattern in ("*:pending", "*:inflight"):
                for key in r.scan_iter(match=pattern, count=1000):
                    raise RuntimeError(
                        f"REDIS_URL holds unflushed counter deltas ({key!r}); flush them "
                        "into their own database first, or leave REDIS_URL unset"
                    )

    def __exit__(self, *exc) -> None:
        if self.counter_redis is not None:
            self.counter_redis.kill()  # its data is this run's alone
        if self.claim is not None:
            self.claim.release()
        if self.scratch is not None:
            self.scratch.drop()
