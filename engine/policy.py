"""The view counting policy: which views count, decided in the increment's own script.

A counter with ``policy=ViewPolicy(...)`` (engine/registry.py) counts a :class:`Visit`
by these rules, all inside the one ``incr.lua`` call that also checks the row exists:

* ``own``: the viewer is the row's author; nothing is added (held back as ``self``);
* ``bot``: a crawler; the view goes to the ``bots`` counter instead (held back as ``bot``);
* otherwise the (visitor, row) pair is looked up among the pairs seen in the current and
  the previous time slot of ``window_s`` seconds: found, nothing is added (``deduped``);
  not found, it is remembered in the current slot, the view is counted and the visitor
  goes into the row's HyperLogLog of unique viewers (engine/uniques.py).

A pair is remembered from its counted view until the end of the next slot: at least
``window_s`` and less than twice that. The memory: each pair is hashed to 64 bits; 32 of
them pick one of the shard's buckets (a Redis set per slot and bucket), the other 32 are
the member, a signed 32-bit integer, so each set stays an ``intset`` of 4 bytes per member
while it holds at most ``set-max-intset-entries`` (512 by default) members. A slot's sets
expire (``EXPIREAT``) when it stops being looked at. With ``DEDUPE_BUCKETS`` = 4096 that
is about 5 bytes per remembered pair at 1M pairs (benchmarks/policy_bench.py); size the
buckets for at most ~400 pairs each per slot (docs/operations.md).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .keys import Keys, held_field

RAW, DEDUPE = "raw", "dedupe"  # COUNTERS_VIEW_POLICY
MODES = (DEDUPE, RAW)
WINDOW_S = 1800  # COUNTERS_VIEW_WINDOW_S default
DEDUPE_BUCKETS = 4096  # dedupe sets per time slot, over all shards
UNIQUES_TTL_S = 7 * 24 * 3600  # an idle row's HyperLogLog leaves Redis (Postgres keeps it)
REASONS = ("deduped", "bot", "self")  # what a held-back view is counted as


@dataclass(frozen=True)
class ViewPolicy:
    """The rules a view counter follows (see the module doc).

    ``bots`` names the column, in the same table, of a registered counter that takes
    crawlers' views (None: crawlers' views are dropped). ``uniques`` names the column
    that keeps the row's unique-viewer estimate, written by the flush (None: no
    estimate). ``window_s`` overrides the site's COUNTERS_VIEW_WINDOW_S for this counter.
    """

    bots: str | None = "bot_view_count"
    uniques: str | None = "unique_viewers"
    window_s: int | None = None


@dataclass(frozen=True)
class Visit:
    """Who views: ``visitor`` is a stable identity (engine/visitors.py builds one),
    ``bot`` a crawler, ``own`` the row's author (the caller knows: it read the row or the
    author is the signed-in user)."""

    visitor: str
    bot: bool = False
    own: bool = False
    # the identity this visitor goes by from the next request on (a vid cookie set by
    # this answer): a counted view is remembered, and counted among unique viewers,
    # under it too, so the visitor's next view is a repeat
    alias: str | None = None


def pair_hash(visitor: str, code: str, row_id: int) -> int:
    """64 bits of the (visitor, row) pair."""
    digest = hashlib.blake2b(f"{visitor}\0{code}\0{row_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass(frozen=True)
class Rule:
    """What one script call must do beyond adding its pairs: the extra KEYS and ARGV of
    ``incr.lua`` (keys: held, seen now, seen before, uniques, and the alias' seen set
    now; args: rule, held field, member, expire-at s, unique viewer, uniques TTL s,
    the alias' member or '')."""

    keys: tuple[str, ...]
    args: tuple

    @classmethod
    def build(
        cls,
        keys: Keys,
        row_id: int,
        code: str,
        visit: Visit,
        now_s: float,
        window_s: int,
        buckets: int,
    ) -> Rule:
        shard = keys.shard_of(row_id)
        if visit.own or visit.bot:
            reason = "self" if visit.own else "bot"
            return cls((keys.held(shard),), (reason, held_field(code, reason), "", 0, "", 0, ""))
        per_shard = max(1, buckets // keys.shards)
        bucket, member = _place(pair_hash(visit.visitor, code, row_id), per_shard)
        alias_bucket, alias_member = bucket, ""
        if visit.alias is not None:
            alias_bucket, alias_member = _place(pair_hash(visit.alias, code, row_id), per_shard)
        slot = int(now_s // window_s)
        return cls(
            (
                keys.held(shard),
                keys.seen(shard, slot, bucket),
                keys.seen(shard, slot - 1, bucket),
                keys.uniques(row_id, code),
                keys.seen(shard, slot, alias_bucket),
            ),
            (
                "view",
                held_field(code, "deduped"),
                member,
                (slot + 2) * window_s,
                visit.alias or visit.visitor,
                UNIQUES_TTL_S,
                alias_member,
            ),
        )


def _place(h: int, buckets: int) -> tuple[int, int]:
    """(bucket, member) of a pair's hash: 32 bits pick the bucket, the other 32 are the
    member, a signed 32-bit int (4 bytes in an intset)."""
    return (h >> 32) % buckets, (h & 0xFFFFFFFF) - 2**31
