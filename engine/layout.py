"""The shard layout of a scope: how many shards its rows are spread over.

Every delta, existence bit and live read finds its shard as ``id % shards``, so every
process of a scope must count with the same number. Postgres records it
(``counter_scopes``); each shard in Redis carries a copy (``{ctr:<s>}:layout``) that the
increment and index scripts check in the same call, so a process started with another
count is refused (``LayoutMismatch``, a 503) instead of writing where no flush looks.

Redis' copy is a cache of Postgres'. When it is missing (a new or a wiped Redis) the
script says so and writes nothing; the layout is read from Postgres (recorded by the
first process of a new scope) and the write is sent again.

``Counters.reshard(new)`` changes the count of a live scope:

1. every shard's layout becomes ``draining:<new>``: every increment is refused;
2. every shard is flushed until it is empty;
3. the existence index is dropped and loaded again for the new layout;
4. Postgres records the new count (only if it still holds the old one);
5. every shard's layout becomes the new count, retired shards included, so a process
   still counting with the old one is refused from then on.

Each step can run again: after a crash, run the same reshard again.
"""

from __future__ import annotations

import sqlalchemy as sa

from .errors import LayoutMismatch, redis_errors, sql_errors
from .keys import DRAINING, Keys

RECORDED = sa.text("SELECT shards FROM counter_scopes WHERE scope = :scope")
RECORD = sa.text(
    "INSERT INTO counter_scopes (scope, shards) VALUES (:scope, :shards) "
    "ON CONFLICT (scope) DO NOTHING"
)
SWITCH = sa.text(
    "UPDATE counter_scopes SET shards = :new, changed_at = now() "
    "WHERE scope = :scope AND shards = :old"
)


class Layout:
    def __init__(self, redis, sql: sa.Engine, keys: Keys) -> None:
        self.redis = redis
        self.sql = sql
        self.keys = keys
        self.scope = keys.scope

    def recorded(self) -> int | None:
        """The scope's shard count in Postgres; None before its first process."""
        with sql_errors("read shard layout"), self.sql.connect() as conn:
            return conn.execute(RECORDED, {"scope": self.scope}).scalar()

    def check(self) -> int:
        """Record this process' count if the scope has none yet, then raise
        LayoutMismatch unless it is the recorded one; make sure Redis carries it."""
        with sql_errors("record shard layout"), self.sql.begin() as conn:
            conn.execute(RECORD, {"scope": self.scope, "shards": self.keys.shards})
            recorded = conn.execute(RECORDED, {"scope": self.scope}).scalar()
        if recorded != self.keys.shards:
            raise LayoutMismatch(
                f"scope {self.scope!r} is recorded with {recorded} shards; this process "
                f"counts with {self.keys.shards}: start it with {recorded} shards, or "
                f"move the scope with Counters.reshard({self.keys.shards})"
            )
        self._publish(recorded)
        return recorded

    def _publish(self, shards: int) -> None:
        """Give every shard of the recorded layout its copy, unless a reshard to another
        count is draining it (a reshard that has recorded this count is done with it)."""
        names = [self.keys.layout(s) for s in range(shards)]
        with redis_errors("shard layout"):
            pipe = self.redis.pipeline(transaction=False)
            for name in names:
                pipe.get(name)
            current = [v.decode() if isinstance(v, bytes) else v for v in pipe.execute()]
            draining = {v for v in current if v and v.startswith(DRAINING)}
            if draining - {f"{DRAINING}{shards}"}:
                raise LayoutMismatch(
                    f"scope {self.scope!r} is being resharded ({', '.join(sorted(draining))})"
                )
            pipe = self.redis.pipeline(transaction=False)
            for name, value in zip(names, current, strict=True):
                if value != str(shards):
                    pipe.set(name, shards)
            pipe.execute()

    def set_all(self, span: int, value: str) -> None:
        """Set the layout copy of shards ``0 .. span - 1`` to ``value``."""
        with redis_errors("shard layout"):
            pipe = self.redis.pipeline(transaction=False)
            for s in range(span):
                pipe.set(self.keys.layout(s), value)
            pipe.execute()

    def switch(self, old: int, new: int) -> None:
        """Record ``new`` in Postgres, if the scope still has ``old`` (or nothing)."""
        with sql_errors("record shard layout"), self.sql.begin() as conn:
            if conn.execute(SWITCH, {"scope": self.scope, "old": old, "new": new}).rowcount:
                return
            conn.execute(RECORD, {"scope": self.scope, "shards": new})
            if conn.execute(RECORDED, {"scope": self.scope}).scalar() != new:
                raise LayoutMismatch(f"scope {self.scope!r} changed layout during the reshard")
