"""The fenced push of spooled views (:mod:`engine.spool`).

Each shard keeps, per spool, the offset up to which it holds the spool's views
(``{ctr:7}:spool``, spool id -> offset), and the script that adds a shard's part of a
push (``lua/spool.lua``) moves that offset in the same atomic step. A part names the
offset it follows and the one it brings the shard to; one that is already covered adds
nothing. So a push whose reply was lost is simply sent again, and a survivor pushing an
orphan's tail never adds what its owner had pushed.
"""

from __future__ import annotations

import enum
import logging
import zlib
from collections import Counter
from dataclasses import dataclass, field

from .buffer import LAYOUT_CHANGED, LAYOUT_UNKNOWN, RoundTrip, _load, now_ms
from .errors import CounterError, StoreUnavailable, redis_errors
from .keys import field as delta_field
from .keys import spool_fences

log = logging.getLogger("engine.spool")  # the spool logs under one name, whichever part

PUSH_ROUNDS = 3  # rounds of a push whose rows Redis' existence index does not show


class Status(enum.Enum):
    ADDED = "added"  # the part's views were added, the fence moved to its end
    ALREADY = "already"  # the fence was past the part already: nothing added
    OUT_OF_STEP = "out_of_step"  # the fence is elsewhere: nothing added
    WAITING = "waiting"  # rows Postgres could not be asked about: nothing added

    @property
    def done(self) -> bool:
        return self in (Status.ADDED, Status.ALREADY)


@dataclass
class Part:
    """One shard's views of one spool's offsets ``[follows, upto)``."""

    spool: str
    shard: int
    follows: int
    upto: int
    views: Counter = field(default_factory=Counter)  # (code, row id) -> n
    status: Status | None = None
    fence: int = 0  # the fence Redis reported (ALREADY, OUT_OF_STEP)
    gone: set = field(default_factory=set)  # (code, row id) of rows found deleted
    dropped: int = 0  # their views (not added)
    uncertain: bool = False  # in a push whose replies were lost: maybe added
    sent_to: int | None = None  # the identity of the Redis it was last sent to


class Pusher:
    """Sends parts of spools to Redis through ``lua/spool.lua``."""

    def __init__(self, counters) -> None:
        self.counters = counters
        self.buffer = counters.buffer
        self.keys = counters.keys
        self.script = self.buffer.redis.register_script(_load("spool.lua"))

    def identity(self) -> int:
        """A checksum of the run ids of the Redis servers: it changes whenever one of
        them restarts (maybe from an older state) or another takes its place."""
        with redis_errors("redis identity"):
            info = self.buffer.redis.info("server")
        if "run_id" in info:
            ids = [info["run_id"]]
        else:  # a cluster: one reply per node
            ids = sorted(v["run_id"] for v in info.values() if isinstance(v, dict))
        return zlib.crc32(",".join(ids).encode())

    def fence_key(self, shard: int) -> str:
        """The shard's hash of spool fences (spool id -> offset)."""
        return spool_fences(self.keys, shard)

    def fences(self, spool: str) -> dict[int, int]:
        """Per shard, the offset of ``spool`` up to which the shard holds its views."""
        with redis_errors("spool fences"):
            pipe = self.buffer.redis.pipeline(transaction=False)
            for s in range(self.keys.shards):
                pipe.hget(spool_fences(self.keys, s), spool)
            return {s: int(v or 0) for s, v in enumerate(pipe.execute())}

    def push(self, parts: list[Part]) -> None:
        """Send ``parts`` (one round trip, one more per round of Postgres checks) and set
        each one's ``status``. Parts of one shard and spool go in the order given.
        BufferUnavailable when Redis did not answer: some parts may have been added;
        sending them again adds nothing twice."""
        for part in parts:
            part.status, part.gone, part.dropped = None, set(), 0
        confirmed: set[tuple[str, int]] = set()  # rows Postgres has, whatever the index says
        gone: set[tuple[str, int]] = set()  # rows Postgres does not have
        todo = [p for p in parts if p.views or p.upto > p.follows]
        for _ in range(PUSH_ROUNDS):
            calls = [self._call(p, confirmed, gone) for p in todo]
            replies = self._run([c[:2] for c in calls])
            unseen: list[tuple[Part, list, list[int]]] = []
            for part, (_, _, entries), reply in zip(todo, calls, replies, strict=True):
                status = int(reply[0])
                if status == 0:
                    part.status, part.fence = Status.ADDED, part.upto
                    part.gone = {k for k in part.views if k in gone}
                    part.dropped = sum(part.views[k] for k in part.gone)
                elif status in (1, 2):
                    part.status = Status.ALREADY if status == 1 else Status.OUT_OF_STEP
                    part.fence = int(reply[1])
                else:  # 3: rows the index does not show
                    unseen.append((part, entries, [int(i) for i in reply[1:]]))
            if not unseen:
                return
            try:
                self._ask_postgres(unseen, confirmed, gone)
            except StoreUnavailable:
                log.warning("spooled views wait for Postgres", exc_info=True)
                break
            todo = [part for part, _, _ in unseen]
        for part in todo:
            if part.status is None:
                part.status = Status.WAITING

    def _ask_postgres(self, unseen, confirmed: set, gone: set) -> None:
        """Sort the rows the index did not show into ``confirmed`` and ``gone``; mark
        rows that exist but a loaded index missed (Redis back from an old dump)."""
        asked: dict[str, set[int]] = {}
        stale: dict[str, set[int]] = {}
        for _, entries, numbers in unseen:
            for i in numbers:
                code, row_id, table = entries[abs(i) - 1]
                asked.setdefault(table, set()).add(row_id)
                if i > 0:
                    stale.setdefault(table, set()).add(row_id)
        existence = self.counters.existence
        found = {table: existence.stored(table, ids) for table, ids in asked.items()}
        for _, entries, numbers in unseen:
            for i in numbers:
                code, row_id, table = entries[abs(i) - 1]
                (confirmed if row_id in found[table] else gone).add((code, row_id))
        for table, ids in stale.items():
            if ids & found[table]:
                try:
                    existence.mark(table, ids & found[table])
                except CounterError:
                    log.warning("could not mark %s rows again in the index", table)

    def _call(self, part: Part, confirmed: set, gone: set):
        k, s = self.keys, part.shard
        keys = [k.pending(s), k.accepted(s), k.gen(s), k.seq(s), k.layout(s), spool_fences(k, s)]
        slots: dict[str, int] = {}

        def slot(key: str) -> int:
            if key not in slots:
                keys.append(key)
                slots[key] = len(keys)
            return slots[key]

        args: list = [now_ms(), self.buffer.gen_token, k.shards, part.spool, part.follows]
        args += [part.upto, self.buffer.bucketed_codes]
        entries = []
        registry = self.counters.registry
        for (code, row_id), n in part.views.items():
            counter = registry.by_code(code)
            if counter is None or (code, row_id) in gone or not n:
                if counter is None:
                    log.error("spooled views of unknown counter code %r dropped", code)
                continue
            bits = far = 0
            where = k.exists_offset(row_id)
            if (code, row_id) not in confirmed:
                bits = slot(k.exists(s, counter.table))
                if not k.in_bitmap(row_id):
                    far, where = slot(k.exists_sparse(s, counter.table)), row_id
            args += [delta_field(row_id, code), n, bits, far, where]
            entries.append((code, row_id, counter.table))
        return keys, args, entries

    def _run(self, calls: list[tuple[list, list]]) -> list:
        if not calls:
            return []
        with redis_errors("spool push"):
            trip = RoundTrip(self.buffer.redis)
            for keys, args in calls:
                trip.script(self.script, keys, args)
            replies = trip.execute()
            unknown = [i for i, r in enumerate(replies) if int(r[0]) == LAYOUT_UNKNOWN]
            if unknown:  # nothing was written: set the layout up, send those again
                self.buffer.on_unknown_layout()
                again = RoundTrip(self.buffer.redis)
                for i in unknown:
                    again.script(self.script, *calls[i])
                for i, reply in zip(unknown, again.execute(), strict=True):
                    replies[i] = reply
        if any(int(r[0]) in (LAYOUT_CHANGED, LAYOUT_UNKNOWN) for r in replies):
            self.buffer.outcome(LAYOUT_CHANGED)  # raises LayoutMismatch
        return replies
