"""The Redis side: add deltas, claim a shard's batch, release it, snapshot what is unapplied.

Nothing here talks to Postgres. Every call is one Redis round trip (a script, or a
pipeline of scripts when several shards are involved; on a Redis Cluster, one per node
involved, sent in parallel).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from importlib import resources

from redis.cluster import ClusterPipeline
from redis.commands.core import Script
from redis.exceptions import (
    AskError,
    MovedError,
    NoScriptError,
    RedisError,
    ResponseError,
    TryAgainError,
)

from .batch import decoded
from .clients import command_retries
from .errors import BufferUnavailable, LayoutMismatch, redis_errors
from .keys import BASE_FIELD, OLDEST_FIELD, Keys, field
from .lineage import Base
from .policy import Rule
from .wire import Wire, bulk, evalsha_head, pack_command

log = logging.getLogger(__name__)

DURABLE_TIMEOUT_MS = 5_000  # how long a flush waits for Redis to fsync its batch
# Delta fields one claim moves at most: after an outage a shard's backlog drains in
# several transactions of this size instead of one Lua call and one transaction for all.
CLAIM_MAX_FIELDS = 50_000
# A shard flush takes ~30 ms for 1,500 counters; a flusher killed mid-flush holds its
# shard back for at most this long. Correctness never rests on it: batches are fenced.
FLUSH_LOCK_TTL_MS = 5_000

# Cluster replies to commands that did not run: safe to send again, to the right node.
REFUSED = (MovedError, AskError, TryAgainError)


class Outcome(IntEnum):
    """What an existence-checked increment did."""

    NOT_LOADED = -1  # the existence index is missing: caller must ask Postgres
    MISSING = 0  # the row does not exist; nothing was written
    COUNTED = 1
    HELD_BACK = 2  # the row exists; a view policy's rule held the view back

    @property
    def found(self) -> bool:
        """The row exists (the increment counted, or a rule held it back)."""
        return self in (Outcome.COUNTED, Outcome.HELD_BACK)


# Script replies about the shard layout (engine/layout.py); nothing was written.
LAYOUT_CHANGED = -2  # laid out for another shard count, or draining for a reshard
LAYOUT_UNKNOWN = -3  # no layout in Redis (new or wiped): set it up and call again


@dataclass(frozen=True)
class Claim:
    """A shard's batch, immutable until released: ``fields`` is the inflight hash as Redis
    sent it, ``[name, delta, name, delta, …]`` in bytes (``batch.split`` parses it)."""

    shard: int
    token: str
    seq: int | None  # None until assign_seq() numbers a new batch
    claimed_ms: int
    resumed: bool
    fields: list[bytes]
    base: Base | None = None  # None: written before batches carried one
    partial: bool = False  # pending kept what was beyond claim_max_fields

    @property
    def deltas(self) -> dict[str, int]:
        """``{field: delta}``, decoded one by one: for inspection, not for the flush."""
        return decoded(self.fields)


@dataclass(frozen=True)
class Unapplied:
    """A snapshot of one shard's deltas that Postgres may not hold yet."""

    pending: dict[str, int]
    inflight: dict[str, int]
    inflight_seq: int | None  # None: no inflight batch, or one not numbered yet
    last_seq: int | None
    pending_base: Base | None = None
    inflight_base: Base | None = None


def _load(name: str) -> str:
    return resources.files(__package__).joinpath("lua", name).read_text()


def _int(value) -> int:
    return int(value) if value is not None else 0


def now_ms() -> int:
    return int(time.time() * 1000)


class RoundTrip:
    """Commands and script calls queued on a non-transactional pipeline, sent together.

    On a single Redis this is one round trip; on a Redis Cluster it is one round trip
    per node involved, sent in parallel. Commands go through :meth:`command` (or on
    :attr:`pipe`), scripts through :meth:`script`.

    Scripts go out as bare ``EVALSHA`` commands: redis-py's own pipelined scripts cost
    an extra ``SCRIPT EXISTS`` round trip per execute, and its cluster pipeline refuses
    them (redis/redis-py#2914), yet the command routes by its keys like any keyed one.

    Given a ``wire`` (engine/wire.py), the commands are packed here and written on that
    lean connection instead (a page view's round trip); :attr:`pipe` is None then.
    """

    def __init__(self, redis, wire: Wire | None = None) -> None:
        self.redis = redis
        self.wire = wire
        self.pipe = redis.pipeline(transaction=False) if wire is None else None
        self._packed: list[bytes] = []
        # (position, script, what to send again: keys and args, or the packed command)
        self._calls: list[tuple[int, Script, object]] = []

    def command(self, *args) -> None:
        if self.wire is not None:
            self._packed.append(pack_command(args))
        else:
            self.pipe.execute_command(*args)

    def script(self, script: Script, keys: list, args: list) -> None:
        if self.wire is not None:
            packed = pack_command(("EVALSHA", script.sha, len(keys), *keys, *args))
            self.packed_script(script, packed)
            return
        self._calls.append((len(self.pipe), script, (keys, args)))
        self.pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)

    def packed_script(self, script: Script, payload: bytes) -> None:
        """A script call packed already (:func:`engine.wire.evalsha_head`); wire only."""
        self._calls.append((len(self._packed), script, payload))
        self._packed.append(payload)

    def execute(self) -> list:
        """Replies in queueing order; raises the first error."""
        replies = self._send()
        # A server that never saw a script (new, restarted, failed over, SCRIPT FLUSH)
        # answers NOSCRIPT without running it, so loading the scripts and sending just
        # those calls again cannot apply anything twice.
        missing = [c for c in self._calls if isinstance(replies[c[0]], NoScriptError)]
        if missing:
            for script in {c[1] for c in missing}:
                # a script may need more than loading (engine/readmodel.py: a Redis that
                # lost its scripts may have come back older: its read models are void)
                load = getattr(script, "load_with", None)
                if load is not None:
                    load()
                else:
                    self.redis.script_load(script.script)  # on every primary of a cluster
            if self.wire is not None:
                again = self.wire.pipeline([payload for _, _, payload in missing])
            else:
                pipe = self.redis.pipeline(transaction=False)
                for _, script, (keys, args) in missing:
                    pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
                again = self._send(pipe)
            for (i, *_), reply in zip(missing, again, strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    def _send(self, pipe=None) -> list:
        if pipe is None:
            if self.wire is not None:
                return self.wire.pipeline(self._packed)
            pipe = self.pipe
        if not isinstance(pipe, ClusterPipeline):
            return pipe.execute(raise_on_error=False)
        # redis-py's cluster pipeline sends the commands of a node whose connection broke
        # once more, one by one: an increment whose reply was lost would count twice
        # (engine/clients.py). So redirections are followed here, and only those.
        stack = cluster_stack(pipe)
        try:
            replies = pipe.send_cluster_commands(
                stack, raise_on_error=False, allow_redirections=False
            )
        finally:
            pipe.reset()
        for i, (command, reply) in enumerate(zip(stack, replies, strict=True)):
            if isinstance(reply, REFUSED):  # not run: the slot is elsewhere, or moving
                try:
                    replies[i] = self.redis.execute_command(*command.args)
                except RedisError as exc:
                    replies[i] = exc
        return replies


def cluster_stack(pipe: ClusterPipeline) -> list:
    """The queued commands of a cluster pipeline (their home moved in redis-py 6)."""
    strategy = getattr(pipe, "_execution_strategy", None)
    return strategy.command_queue if strategy is not None else pipe.command_stack


class Buffer:
    """Sharded delta buffer in Redis (works with ``redis.Redis`` and ``RedisCluster``)."""

    def __init__(
        self,
        redis,
        keys: Keys,
        on_unknown_layout=None,
        claim_max_fields: int = CLAIM_MAX_FIELDS,
        bucketed_codes: str = "",
        read_model_tables: Sequence[str] = (),
    ) -> None:
        if claim_max_fields < 1:
            raise ValueError("claim_max_fields must be at least 1")
        self.redis = redis
        self.keys = keys
        self.claim_max_fields = claim_max_fields
        self.bucketed_codes = bucketed_codes  # ",c1,c2,": codes whose deltas keep buckets
        # code, table, …: where a release folds a batch into the rows' read models
        self.read_model_tables = list(read_model_tables)
        # sets up the layout of a Redis that has none (Counters: from Postgres)
        self.on_unknown_layout = on_unknown_layout or self._adopt_own_layout
        # starts a shard's lineage when a wiped Redis takes its first increment
        self.gen_token = secrets.token_hex(4)
        if command_retries(redis):
            log.warning(
                "this Redis client sends a command again after a connection error: an "
                "increment whose reply is lost would count twice; build the counter "
                "client with engine.clients.redis_client"
            )
        self._incr = redis.register_script(_load("incr.lua"))
        # the single-increment path (the view beacon's) on a lean connection of its own
        # (engine/wire.py); None on a cluster and other clients it cannot stand in for
        self.wire = Wire.of(redis)
        self._heads: dict[tuple, tuple[bytes, bytes, bytes]] = {}
        self._claim = redis.register_script(_load("claim.lua"))
        self._assign = redis.register_script(_load("assign.lua"))
        self._unlock = redis.register_script(_load("unlock.lua"))
        self._relock = redis.register_script(_load("relock.lua"))
        self._no_waitaof: set[str] = set()  # nodes found without WAITAOF (or AOF off)
        self._assign_loaded: set[str] = set()  # nodes the numbering script was loaded on
        self._release = redis.register_script(_load("release.lua"))
        self._lock_dirty = redis.register_script(_load("lock_dirty.lua"))
        self._read = redis.register_script(_load("read.lua"))
        self.mark_script = redis.register_script(_load("mark.lua"))
        self._count_buckets = redis.register_script(_load("count_buckets.lua"))

    # -- writing -------------------------------------------------------------

    def _incr_call(
        self,
        row_id: int,
        pairs: Sequence[tuple[str, int]],
        table: str | None,
        rule: Rule | None = None,
    ):
        """Arguments of one incr script call for one row (under a view policy's ``rule``)."""
        shard = self.keys.shard_of(row_id)
        k = self.keys
        keys = [k.pending(shard), k.accepted(shard), k.gen(shard), k.seq(shard), k.layout(shard)]
        if rule is not None:
            keys += rule.keys
        where = k.exists_offset(row_id)
        if table is not None:
            keys.append(k.exists(shard, table))
            if not k.in_bitmap(row_id):  # too far out for the bitmap: the set has it
                keys.append(k.exists_sparse(shard, table))
                where = row_id
        args: list = [now_ms(), self.gen_token, k.shards, where]
        args += [len(rule.keys), *rule.args] if rule is not None else [0]
        args.append(self.bucketed_codes)
        for code, n in pairs:
            args += [field(row_id, code), int(n)]
        return keys, args

    def add(
        self,
        row_id: int,
        pairs: Sequence[tuple[str, int]],
        exists_in: str | None = None,
        rule: Rule | None = None,
    ) -> Outcome:
        """Atomically add ``(code, delta)`` pairs for one row; a missing field counts as 0.

        With ``exists_in`` the deltas are added only if the row is marked in that
        table's existence index, in the same script (one round trip, no key created
        on a miss). With ``rule`` (engine/policy.py) a view policy decides in that script
        whether they are added (``Outcome.HELD_BACK`` when not).
        """
        wire = self.wire
        if wire is not None:
            payload = self._incr_payload(row_id, pairs, exists_in, rule)
            sha, source = self._incr.sha, self._incr.script
            with redis_errors("increment"):
                reply = wire.call(sha, source, payload)
                if reply == LAYOUT_UNKNOWN:  # nothing was written: set it up, send again
                    self.on_unknown_layout()
                    reply = wire.call(sha, source, payload)
            return self.outcome(reply)
        keys, args = self._incr_call(row_id, pairs, exists_in, rule)
        with redis_errors("increment"):
            reply = self._incr(keys=keys, args=args)
            if reply == LAYOUT_UNKNOWN:
                self.on_unknown_layout()
                reply = self._incr(keys=keys, args=args)
        return self.outcome(reply)

    def queue_add(
        self,
        trip: RoundTrip,
        row_id: int,
        pairs: Sequence[tuple[str, int]],
        exists_in: str | None = None,
        rule: Rule | None = None,
    ) -> None:
        """Queue :meth:`add` on ``trip``; its reply goes to :meth:`outcome`."""
        if trip.wire is not None:
            trip.packed_script(self._incr, self._incr_payload(row_id, pairs, exists_in, rule))
        else:
            trip.script(self._incr, *self._incr_call(row_id, pairs, exists_in, rule))

    def _incr_payload(
        self,
        row_id: int,
        pairs: Sequence[tuple[str, int]],
        table: str | None,
        rule: Rule | None,
    ) -> bytes:
        """The incr script's ``EVALSHA`` command for one row, as :meth:`_incr_call` lays
        out its keys and arguments, packed for the wire. Without a rule, the keys and
        the arguments that do not change (the caller's token, shard count, bucketed
        codes) are packed once per shard and table."""
        k = self.keys
        if rule is not None or (table is not None and not k.in_bitmap(row_id)):
            keys, args = self._incr_call(row_id, pairs, table, rule)
            return pack_command(("EVALSHA", self._incr.sha, len(keys), *keys, *args))
        shard = k.shard_of(row_id)
        parts = self._heads.get((shard, table, len(pairs)))
        if parts is None:
            parts = self._incr_head(shard, table, len(pairs))
        head, after_now, after_where = parts
        body = [head, bulk(now_ms()), after_now, bulk(k.exists_offset(row_id)), after_where]
        for code, n in pairs:
            body += (bulk(field(row_id, code)), bulk(int(n)))
        return b"".join(body)

    def _incr_head(self, shard: int, table: str | None, npairs: int) -> tuple[bytes, ...]:
        keys, args = self._incr_call(shard, [("", 0)] * npairs, table)
        assert len(keys) == 5 + (table is not None)  # the bitmap, not the sparse set
        parts = (
            evalsha_head(self._incr.sha, keys, len(args)),
            bulk(self.gen_token) + bulk(self.keys.shards),  # args[1:3]
            bulk(0) + bulk(self.bucketed_codes),  # args[4:6]: no rule, the bucketed codes
        )
        self._heads[(shard, table, npairs)] = parts
        return parts

    def add_checked(
        self, rows: Sequence[tuple[int, Sequence[tuple[str, int]], str]]
    ) -> list[Outcome]:
        """``add(row_id, pairs, exists_in=table)`` for each ``(row_id, pairs, table)``, in one
        pipelined round trip; the outcomes in the same order."""
        calls = [(self._incr, *self._incr_call(*row)) for row in rows]
        return [self.outcome(reply) for reply in self.run(calls, "increment")]

    def add_many(self, rows: Iterable[tuple[int, Sequence[tuple[str, int]]]]) -> None:
        """Add deltas for several rows in one pipelined round trip (no existence check)."""
        self.run([(self._incr, *self._incr_call(row_id, pairs, None)) for row_id, pairs in rows])

    def run(self, calls: list[tuple[Script, list, list]], what: str = "increment") -> list:
        """Send layout-checked script calls in one round trip; their replies in order.

        A shard whose layout Redis does not know gets it set up and its calls sent again
        (they wrote nothing); LayoutMismatch if any call is refused for its layout (the
        other calls of the trip went through).
        """
        if not calls:
            return []
        with redis_errors(what):
            trip = RoundTrip(self.redis)
            for script, keys, args in calls:
                trip.script(script, keys, args)
            replies = trip.execute()
            unknown = [i for i, reply in enumerate(replies) if reply == LAYOUT_UNKNOWN]
            if unknown:
                self.on_unknown_layout()
                again = RoundTrip(self.redis)
                for i in unknown:
                    again.script(*calls[i])
                for i, reply in zip(unknown, again.execute(), strict=True):
                    replies[i] = reply
        for reply in replies:
            self.outcome(reply)
        return replies

    def outcome(self, reply: int) -> Outcome:
        """The Outcome of an increment script's reply; raises LayoutMismatch for a
        refusal on layout grounds."""
        if reply in (LAYOUT_CHANGED, LAYOUT_UNKNOWN):
            raise LayoutMismatch(
                f"this process counts with {self.keys.shards} shards, but Redis is laid out "
                "for another count or is being resharded: nothing was written "
                "(see Counters.check_layout)"
            )
        return Outcome(reply)

    def _adopt_own_layout(self) -> None:
        """Without a record to ask (a Buffer on its own), take this one's count."""
        with redis_errors("shard layout"):
            pipe = self.redis.pipeline(transaction=False)
            for s in range(self.keys.shards):
                pipe.set(self.keys.layout(s), self.keys.shards, nx=True)
            pipe.execute()

    # -- flushing ------------------------------------------------------------

    def dirty_shards(self, span: int | None = None) -> list[int]:
        """Shards (of ``0 .. span - 1``, default: this layout's) holding a pending or an
        inflight batch (one pipelined round trip)."""
        with redis_errors("scan shards"):
            pipe = self.redis.pipeline(transaction=False)
            for s in range(span or self.keys.shards):
                pipe.exists(self.keys.pending(s), self.keys.inflight(s))
            found = pipe.execute()
        return [s for s, n in enumerate(found) if n]

    def lock(self, shard: int, token: str, ttl_ms: int = FLUSH_LOCK_TTL_MS) -> bool:
        """Take the shard's flush lock for ``ttl_ms``; False when another flush holds it."""
        with redis_errors(f"lock shard {shard}"):
            return bool(self.redis.set(self.keys.flushing(shard), token, nx=True, px=ttl_ms))

    def relock(self, shard: int, token: str, ttl_ms: int = FLUSH_LOCK_TTL_MS) -> bool:
        """Extend the flush lock for ``ttl_ms`` if it is still ours; False when it is not."""
        with redis_errors(f"lock shard {shard}"):
            return bool(self._relock(keys=[self.keys.flushing(shard)], args=[token, ttl_ms]))

    def unlock(self, shard: int, token: str) -> None:
        """Drop the flush lock if it is still ours (it expires by itself otherwise)."""
        with redis_errors(f"unlock shard {shard}"):
            self._unlock(keys=[self.keys.flushing(shard)], args=[token])

    def lock_dirty(self, shards: Sequence[int], token: str, ttl_ms: int) -> list[int]:
        """Per shard, one round trip for all: 0 when it holds nothing to flush, -1 when it
        does but another flush holds its lock, else the fields its pending and inflight
        hashes hold (deltas, time buckets, bookkeeping), its lock now ours for ``ttl_ms``."""
        calls = []
        for s in shards:
            keys = [self.keys.pending(s), self.keys.inflight(s), self.keys.flushing(s)]
            calls.append((self._lock_dirty, keys, [token, ttl_ms]))
        return self._trip(calls, "lock shards")

    def relock_many(self, shards: Sequence[int], token: str, ttl_ms: int) -> list[int]:
        """:meth:`relock` for each shard, one round trip; the shards still ours."""
        calls = [(self._relock, [self.keys.flushing(s)], [token, ttl_ms]) for s in shards]
        return [s for s, ok in zip(shards, self._trip(calls, "lock shards"), strict=True) if ok]

    def unlock_many(self, shards: Sequence[int], token: str) -> None:
        """:meth:`unlock` for each shard, one round trip."""
        self._trip([(self._unlock, [self.keys.flushing(s)], [token]) for s in shards], "unlock")

    def sizes(self, shards: Sequence[int]) -> list[int]:
        """Fields (deltas, time buckets and bookkeeping) each shard's pending and inflight
        hashes hold together, one round trip: what a flush of it would claim."""
        with redis_errors("shard sizes"):
            pipe = self.redis.pipeline(transaction=False)
            for s in shards:
                pipe.hlen(self.keys.pending(s))
                pipe.hlen(self.keys.inflight(s))
            lens = pipe.execute()
        return [lens[2 * i] + lens[2 * i + 1] for i in range(len(shards))]

    def _trip(self, calls: list[tuple[Script, list, list]], what: str) -> list:
        """The scripts of a combined flush's steps in one round trip, on this thread's lean
        connection where there is one: all of its steps are made on the calling thread."""
        if not calls:
            return []
        with redis_errors(what):
            trip = RoundTrip(self.redis, self.wire)
            for script, keys, args in calls:
                trip.script(script, keys, args)
            return trip.execute()

    def claim(self, shard: int, token: str) -> Claim | None:
        """Move pending to inflight under ``token`` (at most ``claim_max_fields`` delta
        fields of it: ``partial`` says more were left), or return the inflight batch as is."""
        args = [token, now_ms(), self.claim_max_fields]
        with redis_errors(f"claim shard {shard}"):
            reply = self._claim(keys=self.keys.shard_keys(shard), args=args)
        return self._claimed(shard, reply)

    def claim_many(self, tokens: dict[int, str]) -> dict[int, Claim | None]:
        """:meth:`claim` of each shard under its token (``{shard: token}``), one round trip."""
        args = [now_ms(), self.claim_max_fields]
        calls = [(self._claim, self.keys.shard_keys(s), [t, *args]) for s, t in tokens.items()]
        replies = self._trip(calls, "claim shards")
        return {s: self._claimed(s, r) for s, r in zip(tokens, replies, strict=True)}

    @staticmethod
    def _claimed(shard: int, reply) -> Claim | None:
        if not reply:
            return None
        token, seq, claimed_ms, resumed, flat, base, partial = reply
        if flat and isinstance(flat[0], str):  # a client with decode_responses=True
            flat = [x.encode() for x in flat]
        return Claim(
            shard,
            token.decode() if isinstance(token, bytes) else token,
            int(seq) if seq is not None else None,
            int(claimed_ms),
            bool(resumed),
            flat,
            Base.parse(base),
            bool(partial),
        )

    def number(self, shard: int, token: str, fresh_seq: int | None) -> int | None:
        """Give the batch claimed under ``token`` its seq (``fresh_seq``, unless it has
        one already) and wait until Redis has fsynced it (``WAITAOF``); returns the
        batch's seq, or None when that batch is gone: another flush finished it.

        A claim and its seq must survive a Redis crash once Postgres may hold the batch.
        WAITAOF waits only for the writes of its own connection, so it goes out behind
        the numbering script, which always writes, in one pipeline on the connection of
        the node that owns the shard: even a batch claimed and numbered by a flusher
        that died is covered (the AOF is sequential). Without AOF, or before Redis 7.2,
        there is nothing to wait for; raises BufferUnavailable if the fsync does not
        come within DURABLE_TIMEOUT_MS.
        """
        return self._number(shard, token, fresh_seq, durable=True)

    def assign_seq(self, shard: int, token: str, fresh_seq: int) -> int | None:
        """:meth:`number` without waiting for the fsync (what a flusher that dies right
        after numbering leaves behind)."""
        return self._number(shard, token, fresh_seq, durable=False)

    def _number(self, shard: int, token: str, fresh_seq: int | None, durable: bool):
        k = self.keys
        keys = [k.batch(shard), k.seq(shard), k.pending(shard)]
        args = [token, "" if fresh_seq is None else fresh_seq, now_ms()]
        client, node = self._node_of(k.batch(shard))
        wait = durable and node not in self._no_waitaof
        with redis_errors(f"number shard {shard}"):
            if node not in self._assign_loaded:  # a NOSCRIPT would cost a second WAITAOF
                client.script_load(self._assign.script)
                self._assign_loaded.add(node)
            for _ in range(2):
                pipe = client.pipeline(transaction=False)
                pipe.execute_command("EVALSHA", self._assign.sha, len(keys), *keys, *args)
                if wait:
                    pipe.execute_command("WAITAOF", 1, 0, DURABLE_TIMEOUT_MS)
                replies = pipe.execute(raise_on_error=False)
                if not isinstance(replies[0], NoScriptError):
                    break
                # nothing ran (a restarted or new server): load the script, send both again
                client.script_load(self._assign.script)
            if isinstance(replies[0], Exception):
                raise replies[0]
        if wait:
            self._fsynced(shard, node, replies[1])
        return int(replies[0]) if replies[0] is not None else None

    def number_many(self, batches: Sequence[tuple[int, str, int | None]]) -> list[int | None]:
        """:meth:`number` of each ``(shard, token, fresh_seq)``: per Redis node, one pipeline
        of the numbering scripts of its shards with one ``WAITAOF`` behind them all (it
        covers every write the connection made before it); the seqs in the same order."""
        by_node: dict[str, tuple] = {}
        for i, (shard, token, fresh) in enumerate(batches):
            client, node = self._node_of(self.keys.batch(shard))
            by_node.setdefault(node, (client, []))[1].append((i, shard, token, fresh))
        out: list[int | None] = [None] * len(batches)
        for node, (client, items) in by_node.items():
            shards = [item[1] for item in items]
            wait = node not in self._no_waitaof
            with redis_errors(f"number shards {shards}"):
                if node not in self._assign_loaded:
                    client.script_load(self._assign.script)
                    self._assign_loaded.add(node)
                for _ in range(2):
                    pipe = client.pipeline(transaction=False)
                    for _, shard, token, fresh in items:
                        keys = [self.keys.batch(shard), self.keys.seq(shard)]
                        keys.append(self.keys.pending(shard))
                        args = [token, "" if fresh is None else fresh, now_ms()]
                        pipe.execute_command("EVALSHA", self._assign.sha, 3, *keys, *args)
                    if wait:
                        pipe.execute_command("WAITAOF", 1, 0, DURABLE_TIMEOUT_MS)
                    replies = pipe.execute(raise_on_error=False)
                    if not any(isinstance(r, NoScriptError) for r in replies[: len(items)]):
                        break
                    # nothing ran (the scripts that did return the same seq again)
                    client.script_load(self._assign.script)
                for reply in replies[: len(items)]:
                    if isinstance(reply, Exception):
                        raise reply
            if wait:
                self._fsynced(shards[0], node, replies[-1])
            for (i, *_), reply in zip(items, replies, strict=False):
                out[i] = int(reply) if reply is not None else None
        return out

    def _node_of(self, key: str):
        """(client, name) of the node that owns ``key``: the client itself, or on a
        Redis Cluster the client of the primary of the key's slot."""
        if hasattr(self.redis, "get_node_from_key"):
            node = self.redis.get_node_from_key(key)
            return self.redis.get_redis_connection(node), node.name
        return self.redis, ""

    def _fsynced(self, shard: int, node: str, reply) -> None:
        if isinstance(reply, ResponseError):  # unknown command, or appendonly disabled
            log.info("WAITAOF unavailable on %s, batches are not fsynced first: %s", node, reply)
            self._no_waitaof.add(node)
        elif isinstance(reply, RedisError):
            raise BufferUnavailable(f"waitaof shard {shard}: {reply}") from reply
        elif reply[0] < 1:
            raise BufferUnavailable(f"shard {shard}: batch not fsynced in {DURABLE_TIMEOUT_MS} ms")

    def release(self, shard: int, token: str, gen: str | None = None) -> bool:
        """Forget a batch that Postgres holds; a no-op unless it is still the inflight one.

        With ``gen``, the shard takes that lineage too (in the same script): the flush
        found this Redis behind Postgres (engine/lineage.py), and the shard's read models
        are forgotten. Otherwise the batch is folded into the read models of its rows
        (engine/readmodel.py) as it leaves.
        """
        keys, args = self._release_call(shard, token, gen)
        with redis_errors(f"release shard {shard}"):
            return bool(self._release(keys=keys, args=args))

    def _release_call(self, shard: int, token: str, gen: str | None) -> tuple[list, list]:
        """The keys and arguments of release.lua for one batch."""
        k = self.keys
        keys = [k.inflight(shard), k.batch(shard), k.gen(shard), k.read_model_state(shard)]
        args = [token, gen or "", k.read_model_prefix(shard), *self.read_model_tables]
        return keys, args

    def release_many(
        self,
        batches: Sequence[tuple[int, str, str | None]],
        unlock: Sequence[int] = (),
        lock_token: str = "",
    ) -> list[bool]:
        """:meth:`release` of each ``(shard, token, gen)``, then :meth:`unlock` of the
        ``unlock`` shards (flush locks held under ``lock_token``), in one round trip;
        whether each batch was released."""
        calls = [(self._release, *self._release_call(*batch)) for batch in batches]
        calls += [(self._unlock, [self.keys.flushing(s)], [lock_token]) for s in unlock]
        return [bool(r) for r in self._trip(calls, "release shards")[: len(batches)]]

    # -- reading -------------------------------------------------------------

    def unapplied(
        self, fields_by_shard: dict[int, list[str]], trip: RoundTrip | None = None
    ) -> dict[int, Unapplied]:
        """Atomic per-shard snapshots of pending and inflight deltas, one round trip.

        Given ``trip``, only queues the scripts (in sorted shard order) for the caller
        to execute and hand to :meth:`parse_unapplied`.
        """
        shards = sorted(s for s, f in fields_by_shard.items() if f)
        own = trip is None
        with redis_errors("read deltas"):
            if own:
                trip = RoundTrip(self.redis)
            for s in shards:
                trip.script(self._read, self.keys.shard_keys(s), fields_by_shard[s])
            if not own:
                return {}
            replies = trip.execute()
        return self.parse_unapplied(shards, fields_by_shard, replies)

    @staticmethod
    def parse_unapplied(shards, fields_by_shard, replies) -> dict[int, Unapplied]:
        out = {}
        for s, (pending, inflight, iseq, last, pbase, ibase) in zip(shards, replies, strict=True):
            names = fields_by_shard[s]
            out[s] = Unapplied(
                pending={f: int(v) for f, v in zip(names, pending, strict=True) if v is not None},
                inflight={f: int(v) for f, v in zip(names, inflight, strict=True) if v is not None},
                inflight_seq=int(iseq) if iseq is not None else None,
                last_seq=int(last) if last is not None else None,
                pending_base=Base.parse(pbase),
                inflight_base=Base.parse(ibase),
            )
        return out

    def backlog(self) -> list[dict]:
        """Per-shard pending/inflight sizes (counters; time-bucket fields not counted) and
        the age of their oldest delta."""
        with redis_errors("backlog"):
            pipe = self.redis.pipeline(transaction=False)
            for s in range(self.keys.shards):
                for key in (self.keys.pending(s), self.keys.inflight(s)):
                    pipe.hlen(key)
                    pipe.hget(key, OLDEST_FIELD)
                    pipe.hexists(key, BASE_FIELD)
                pipe.hget(self.keys.batch(s), "seq")
            raw = pipe.execute()
            buckets = [(0, 0)] * self.keys.shards
            if self.bucketed_codes:  # bucket fields ride along; they are not counters
                trip = RoundTrip(self.redis)
                for s in range(self.keys.shards):
                    keys = [self.keys.pending(s), self.keys.inflight(s)]
                    trip.script(self._count_buckets, keys, [])
                buckets = trip.execute()
        out = []
        for s in range(self.keys.shards):
            plen, pt, pb, ilen, it, ib, seq = raw[s * 7 : s * 7 + 7]
            plen, ilen = plen - buckets[s][0], ilen - buckets[s][1]
            oldest = min((int(t) for t in (pt, it) if t is not None), default=None)
            out.append(
                {
                    "shard": s,
                    "pending": max(plen - (pt is not None) - pb, 0),
                    "inflight": max(ilen - (it is not None) - ib, 0),
                    "inflight_seq": _int(seq) or None,
                    "oldest_ms": oldest,
                }
            )
        return out
