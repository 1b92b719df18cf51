"""Postgres and Redis for one run: the environment's, or scratch ones this run owns.

``DATABASE_URL`` / ``REDIS_URL`` are used as given: never dropped or flushed.

Unset, the run creates a database ``ctrload_<random>`` through
``LOADTEST_PG_ADMIN_URL`` and drops it at the end, and *claims* a Redis db on
``LOADTEST_REDIS_URL`` (default ``redis://127.0.0.1:6379``): the first of
``LOADTEST_REDIS_DBS`` (default 10, 11, 12, 9, 8) whose claim key it can set. Two
runs at once (two test sessions on one machine) thus never share a db: the broker
queue, the RedBeat lock and the counter buffer of one would be flushed or consumed
by the other. Only a claimed db is ever flushed, in the same MULTI as the claim
check; the claim expires if the runner dies, so the db is reused later.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
from urllib.parse import urlsplit

import redis
import sqlalchemy as sa

PG_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
REDIS_SERVER_URL = "redis://127.0.0.1:6379"
REDIS_DBS = "10,11,12,9,8"  # the app's tests use 15, the engine's 14, the benchmarks 13
CLAIM_KEY = "loadtests:claim"
CLAIM_TTL_S = 60
CLAIM_REFRESH_S = 10.0


def with_path(url: str, path: str) -> str:
    return urlsplit(url)._replace(path=path).geturl()


class RedisClaim:
    """Exclusive use of one Redis db, held by a key with a TTL that a thread refreshes."""

    def __init__(self, server_url: str, dbs: list[int]) -> None:
        self.token = uuid.uuid4().hex
        self.url: str | None = None
        self.lost = False
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        for db in dbs:
            url = with_path(server_url, f"/{db}")
            with redis.Redis.from_url(url) as r:
                if r.set(CLAIM_KEY, self.token, nx=True, ex=CLAIM_TTL_S):
                    self.url = url
                    break
        if self.url is None:
            raise RuntimeError(f"every Redis db of {dbs} on {server_url} is claimed by a run")

    def _mine(self, r: redis.Redis, then) -> bool:
        """Run ``then(pipe)`` in a MULTI only if the claim is still ours."""
        with r.pipeline() as pipe:
            try:
                pipe.watch(CLAIM_KEY)
                if pipe.get(CLAIM_KEY) != self.token.encode():
                    return False
                pipe.multi()
                then(pipe)
                pipe.execute()
                return True
            except redis.WatchError:
                return False

    def flush(self) -> None:
        """Empty the db, keeping the claim (one MULTI: nobody can take it in between)."""
        with redis.Redis.from_url(self.url) as r:
            ok = self._mine(
                r, lambda p: (p.flushdb(), p.set(CLAIM_KEY, self.token, ex=CLAIM_TTL_S))
            )
        if not ok:
            raise RuntimeError(f"lost the claim on {self.url}")

    def start_refreshing(self) -> None:
        self._thread = threading.Thread(target=self._refresh, name="redis-claim", daemon=True)
        self._thread.start()

    def _refresh(self) -> None:
        while not self._halt.wait(CLAIM_REFRESH_S):
            try:
                with redis.Redis.from_url(self.url) as r:
                    if not self._mine(r, lambda p: p.expire(CLAIM_KEY, CLAIM_TTL_S)):
                        self.lost = True  # someone flushed or took our db
                        return
            except redis.RedisError:
                continue

    def release(self) -> None:
        """Flush the db and drop the claim, unless another run holds it now."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with contextlib.suppress(redis.RedisError), redis.Redis.from_url(self.url) as r:
            self._mine(r, lambda p: p.flushdb())


class Servers:
    """See the module docstring; a context manager that cleans up what it created."""

    def __init__(self) -> None:
        self.database_url = os.environ.get("DATABASE_URL")
        self.redis_url = os.environ.get("REDIS_URL")
        self.scratch_db: str | None = None
        self.admin_url = os.environ.get("LOADTEST_PG_ADMIN_URL", PG_ADMIN_URL)
        self.claim: RedisClaim | None = None

    def __enter__(self) -> Servers:
        if self.redis_url:
            self._refuse_stale_deltas()
        else:
            server = os.environ.get("LOADTEST_REDIS_URL", REDIS_SERVER_URL)
            dbs = [int(x) for x in os.environ.get("LOADTEST_REDIS_DBS", REDIS_DBS).split(",")]
            self.claim = RedisClaim(server, dbs)
            self.claim.flush()
            self.claim.start_refreshing()
            self.redis_url = self.claim.url
        try:
            if not self.database_url:
                self.scratch_db = f"ctrload_{uuid.uuid4().hex[:8]}"
                self._admin(f'CREATE DATABASE "{self.scratch_db}"')
                self.database_url = with_path(self.admin_url, f"/{self.scratch_db}")
        except BaseException:
            self.__exit__()
            raise
        return self

    @property
    def redis_lost(self) -> bool:
        """True when our claimed db was flushed or taken by someone else during the run."""
        return self.claim is not None and self.claim.lost

    def _admin(self, statement: str) -> None:
        admin = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(statement))
        finally:
            admin.dispose()

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
        if self.claim is not None:
            self.claim.release()
        if self.scratch_db:
            self._admin(f'DROP DATABASE IF EXISTS "{self.scratch_db}" WITH (FORCE)')
