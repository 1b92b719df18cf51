"""Exclusive use of one Redis db number on a shared server.

A run *claims* the first db of a list whose claim key it can set (SET NX with a TTL
that a thread refreshes). Two runs at once (two test sessions on one machine) thus
never share a db: the broker queue, the RedBeat lock and the counter buffer of one
would be flushed or consumed by the other. Only a claimed db is ever flushed, in the
same MULTI as the claim check; the claim expires if the run dies, so the db is
reused later.
"""

from __future__ import annotations

import contextlib
import threading
import uuid

import redis

from harness.urls import with_redis_db

CLAIM_KEY = "loadtests:claim"
CLAIM_TTL_S = 60
CLAIM_REFRESH_S = 10.0


class RedisClaim:
    """Exclusive use of one Redis db, held by a key with a TTL that a thread refreshes."""

    def __init__(self, server_url: str, dbs: list[int]) -> None:
        self.token = uuid.uuid4().hex
        self.url: str | None = None
        self.lost = False
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        for db in dbs:
            url = with_redis_db(server_url, db)
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
