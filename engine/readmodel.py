"""The read model: what a page shows of a row, kept in Redis and kept exact by the flush.

A row's read model (``Keys.read_model``) holds the values Postgres has for its counters
and the columns a page shows. A page reads it with the row's pending and inflight deltas
in the same round trip as it counts its view, and asks Postgres nothing. Exactness does
not come from a TTL; it comes from three rules:

* **Fold at release.** release.lua adds a batch to the read models of its rows in the
  same script that drops it from ``inflight``: "read model + pending + inflight" counts
  each delta once, before and after the release.
* **Fenced fill.** A row missing from the read model is read from Postgres (today's live
  read) and then filled, unless a release or an invalidation bumped the shard's state
  version since the page's first round trip, or Postgres holds a batch this Redis has not
  released yet (the ledger's ``applied_seq`` differs from the shard's last released seq).
* **Life token.** A row is read only if it carries its shard's life token. The token is
  dropped when a Redis that lost its scripts (a restart, a failover: it may have come
  back older than Postgres) loads the read script, when a flush finds Redis behind
  Postgres, and on a reshard; the next fill takes a fresh one. Invalidations (a
  reconcile's fixes, deletes, edits) delete the rows.

Rows expire after ``ttl_s`` (and are evictable under ``volatile-*``); the buffer's keys
never expire. A miss costs what a page cost before: the one-statement live read, then
one more round trip to fill. A Redis Cluster keeps the one-statement path (the life
token cannot be dropped on every node at once).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterable, Sequence

from redis.cluster import RedisCluster

from .buffer import Buffer, RoundTrip, _load
from .errors import redis_errors
from .keys import RM_COLUMN, RM_FENCED, RM_FILLED, RM_HITS, RM_LIFE
from .registry import Counter

DEFAULT_TTL_S = 3600

# A column value is kept as one type tag and its text: cheaper to read back than JSON
# (a page decodes every column it shows on every view).
_DECODE = {
    ord("s"): lambda text: text.decode(),
    ord("i"): int,
    ord("f"): float,
    ord("T"): lambda _: True,
    ord("F"): lambda _: False,
    ord("N"): lambda _: None,
    ord("t"): lambda text: dt.datetime.fromisoformat(text.decode()),
    ord("d"): lambda text: dt.date.fromisoformat(text.decode()),
}


def encode(value) -> str:
    """A column value as the read model keeps it (a type tag, then its text). Raises
    TypeError for a type it cannot give back as it was (that row is then not cached)."""
    if isinstance(value, str):
        return "s" + value
    if isinstance(value, bool):
        return "T" if value else "F"
    if isinstance(value, int):
        return f"i{value}"
    if isinstance(value, float):
        return f"f{value!r}"
    if value is None:
        return "N"
    if isinstance(value, dt.datetime):
        return "t" + value.isoformat()
    if isinstance(value, dt.date):
        return "d" + value.isoformat()
    raise TypeError(f"read model cannot keep a {type(value).__name__}")


def decode(raw: bytes):
    """The value :func:`encode` kept."""
    return _DECODE[raw[0]](raw[1:])


class ReadModel:
    """Rows' read models of one scope (see the module docstring)."""

    def __init__(self, buffer: Buffer, ttl_s: int = DEFAULT_TTL_S) -> None:
        if ttl_s < 0:
            raise ValueError("read model TTL must be 0 (off) or a positive number of s")
        self.buffer = buffer
        self.keys = buffer.keys
        self.ttl_s = int(ttl_s)
        self.enabled = self.ttl_s > 0 and not isinstance(buffer.redis, RedisCluster)
        redis = buffer.redis
        # One read script per scope and shard count: its NOSCRIPT is this scope's signal
        # that Redis lost its scripts, so no other scope may have loaded it already.
        tag = f"-- read model of scope {self.keys.scope}, {self.keys.shards} shards\n"
        self._read = redis.register_script(tag + _load("rm_read.lua"))
        self._read.load_with = self._load_read
        self._fill = redis.register_script(_load("rm_fill.lua"))
        self._forget = redis.register_script(_load("rm_forget.lua"))

    def _load_read(self) -> None:
        """Load the read script and drop every shard's life token in one transaction, so
        that no row is read from a Redis that came back without its scripts."""
        pipe = self.buffer.redis.pipeline(transaction=True)
        pipe.script_load(self._read.script)
        for shard in range(self.keys.shards):
            pipe.hdel(self.keys.read_model_state(shard), RM_LIFE)
        pipe.execute()

    @staticmethod
    def fields(counters: Sequence[Counter], columns: Sequence[str]) -> list[str]:
        """The fields of a row's read model: the counters by code, then the columns."""
        return [c.code for c in counters] + [RM_COLUMN + name for name in columns]

    def queue(self, trip: RoundTrip, table: str, row_id: int, fields: list[str]) -> None:
        shard = self.keys.shard_of(row_id)
        keys = [self.keys.read_model_state(shard), self.keys.read_model(table, row_id)]
        trip.script(self._read, keys, fields)

    @staticmethod
    def parse(reply, n_counters: int) -> tuple[str, list[int] | None, list | None]:
        """(state version, stored counter values, column values) of one row; the values
        are None on a miss."""
        version, values = reply
        version = version.decode() if isinstance(version, bytes) else str(version)
        if not values or any(v is None for v in values):
            return version, None, None
        counts = [int(v) for v in values[:n_counters]]
        return version, counts, [decode(v) for v in values[n_counters:]]

    def fill_call(
        self,
        table: str,
        row_id: int,
        version: str,
        applied_seq: int,
        fields: list[str],
        values: Iterable,
    ) -> tuple | None:
        """The fill script call for one row (None when a value cannot be kept)."""
        n = sum(1 for f in fields if not f.startswith(RM_COLUMN))
        pairs: list = []
        try:
            for i, (name, value) in enumerate(zip(fields, values, strict=True)):
                pairs += [name, int(value) if i < n else encode(value)]
        except TypeError:
            return None
        shard = self.keys.shard_of(row_id)
        keys = [self.keys.read_model_state(shard), self.keys.read_model(table, row_id)]
        args = [version, applied_seq, secrets.token_hex(8), self.ttl_s, *pairs]
        return self._fill, keys, args

    def fill(self, calls: list[tuple]) -> int:
        """Run fill calls in one round trip; returns how many rows were filled."""
        if not calls:
            return 0
        with redis_errors("read model fill"):
            trip = RoundTrip(self.buffer.redis)
            for script, keys, args in calls:
                trip.script(script, keys, args)
            return sum(int(r) for r in trip.execute())

    def forget(self, table: str, ids: Iterable[int]) -> None:
        """Drop rows' read models (deleted, edited, or corrected behind the flush's back)."""
        by_shard: dict[int, list[str]] = {}
        for row_id in ids:
            shard = self.keys.shard_of(row_id)
            by_shard.setdefault(shard, []).append(self.keys.read_model(table, row_id))
        self._forget_shards(by_shard)

    def forget_all(self) -> None:
        """Void every row's read model of the scope (a reshard)."""
        self._forget_shards({shard: [] for shard in range(self.keys.shards)})

    def _forget_shards(self, by_shard: dict[int, list[str]]) -> None:
        if not by_shard:
            return
        with redis_errors("read model forget"):
            trip = RoundTrip(self.buffer.redis)
            for shard, rows in sorted(by_shard.items()):
                trip.script(self._forget, [self.keys.read_model_state(shard), *rows], [])
            trip.execute()

    def stats(self) -> dict[str, int]:
        """Reads that found their row (``hit``); rows read from Postgres and filled
        (``filled``) or not because a release or an invalidation raced them
        (``fenced``); ``miss`` = filled + fenced. Summed over the shards, since Redis
        last lost them."""
        names = (RM_HITS, RM_FILLED, RM_FENCED)
        with redis_errors("read model stats"):
            trip = RoundTrip(self.buffer.redis)
            for shard in range(self.keys.shards):
                trip.pipe.hmget(self.keys.read_model_state(shard), names)
            replies = trip.execute()
        out = {n: sum(int(r[i] or 0) for r in replies) for i, n in enumerate(names)}
        out["miss"] = out[RM_FILLED] + out[RM_FENCED]
        return out

    def memory(self, sample: int = 200) -> dict:
        """Rows cached and their average size (``MEMORY USAGE`` of a sample), per scope."""
        redis = self.buffer.redis
        pattern = f"{{{self.keys.scope}:*}}:rm:*"
        rows, sizes = 0, []
        with redis_errors("read model memory"):
            for key in redis.scan_iter(match=pattern, count=1000):
                rows += 1
                if len(sizes) < sample:
                    sizes.append(redis.memory_usage(key, samples=0) or 0)
        avg = sum(sizes) / len(sizes) if sizes else 0.0
        return {"rows": rows, "bytes_per_row": round(avg, 1)}
