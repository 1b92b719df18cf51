"""Every Redis key and hash field the engine uses, built here and nowhere else.

All keys of one shard share the hash tag ``{<prefix>:<shard>}`` so a shard sits in a
single Redis Cluster slot and its Lua scripts touch one node.

    {ctr:7}:pending      hash  "<id>:<code>" -> delta, plus "_t" = ms of oldest delta and
                               "_b" = "<gen>:<seq>", the batch before it (engine/lineage.py);
                               a bucketed counter adds "<id>:<code>@<hour>" -> delta too
                               (hour: whole hours since the epoch, UTC; engine/windows.py)
    {ctr:7}:inflight     hash  the claimed batch (same layout), until its commit
    {ctr:7}:batch        hash  seq (batch identity) and claimed_ms of the inflight batch
    {ctr:7}:seq          str   seq of the last batch numbered on this shard
    {ctr:7}:gen          str   this Redis' lineage token for the shard (engine/lineage.py)
    {ctr:7}:layout       str   the shard count this shard is laid out for, or
                               "draining:<n>" while a reshard to n drains it (layout.py)
    {ctr:7}:flushing     str   flush lock (token, short TTL): saves a second flusher's work
    {ctr:7}:ex:posts     bits  existence index of posts rows living on this shard
    {ctr:7}:exs:posts    set   ids of the shard's posts rows beyond the bitmap's reach
    {ctr:7}:accepted     hash  code -> increments accepted (a metric; never flushed)
    {ctr:7}:held         hash  "<code>:<reason>" -> views the policy held back (a metric)
    {ctr:7}:seen:<slot>:<b> set  (visitor, row) pairs seen in one window slot, as 32-bit
                               ints; bucket b of the shard's (engine/policy.py)
    {ctr:7}:uv:<code>:<id> hll unique viewers of one row (engine/uniques.py)
    {ctr:7}:uvtmp        str   scratch key of the uniques merge script (deleted by it)
    {ctr:7}:rm           hash  the shard's read model state (engine/readmodel.py): "l" its
                               life token, "v" bumped at each release and invalidation,
                               "r" seq of the last batch released; "hit",
                               "filled", "fenced": reads and fills (a metric)
    {ctr:7}:rm:posts:<id> hash a row's read model (TTL): "_l" life token of its fill, the
                               counters' stored values by code, ".<column>" JSON values;
                               release.lua builds it as "<prefix><table>:<id>"
    {ctr:7}:spool        hash  spool id -> offset of that view spool whose views this
                               shard holds (engine/spool.py; the push's fence)
    {ctr}:stats          hash  flush / reconcile totals, histogram, last summaries
    {ctr}:runs:flush     list  the last busy flushes' summaries, newest first (capped)
    {ctr}:runs:reconcile list  the last reconciles' summaries, newest first (capped)
    {ctr}:activity       hash  minute -> one sample of the engine (engine/activity.py)
    {ctr}:rebuilding:posts str lock of the posts existence-index rebuild (TTL)
"""

from __future__ import annotations

from dataclasses import dataclass

# Fields of a pending hash that are not deltas; the Lua scripts spell them as these
# constants do (tests/engine/test_keys.py checks that they agree).
OLDEST_FIELD = "_t"  # ms timestamp of the hash's oldest delta
BASE_FIELD = "_b"  # "<gen>:<seq>": the batch that precedes this one
META_FIELDS = (OLDEST_FIELD, BASE_FIELD)
DEFAULT_SHARDS = 16
DEFAULT_SCOPE = "ctr"
# A Redis bitmap addresses at most 2**32 bits: with 16 shards, ids up to ~6.9e10.
MAX_BIT_OFFSET = 2**32 - 1

BUCKET_SEP = "@"  # "<id>:<code>@<hour>": a time bucket's delta; incr.lua spells it too
HOUR_MS = 3_600_000

# Read model fields (engine/readmodel.py); its scripts and release.lua spell them too.
RM_LIFE = "l"  # state: the life token rows must carry to be read
RM_VERSION = "v"  # state: bumped by every release and invalidation (a fill's fence)
RM_RELEASED = "r"  # state: seq of the shard's last released batch
RM_ROW_LIFE = "_l"  # row: the life token it was filled under
# row: "<RM_COLUMN><column>" holds a column's value (readmodel.encode); rows kept by an
# earlier release in JSON under "." are never read as such
RM_COLUMN = ":"
# state: reads that found their row, rows filled from Postgres and fills fenced off
RM_HITS, RM_FILLED, RM_FENCED = "hit", "filled", "fenced"

DRAINING = "draining:"  # a shard's layout while a reshard empties it ("draining:<new>")


@dataclass(frozen=True)
class Keys:
    """The keys of one scope (a site's counters: its keys and its ledger rows)."""

    scope: str = DEFAULT_SCOPE
    shards: int = DEFAULT_SHARDS

    def __post_init__(self) -> None:
        if self.shards < 1:
            raise ValueError("shards must be >= 1")
        if not self.scope or any(ch in self.scope for ch in "{}: "):
            raise ValueError(f"bad scope {self.scope!r}: no braces, colons or spaces")

    def shard_of(self, row_id: int) -> int:
        """The shard of a row; every counter of one row lives on the same shard."""
        return row_id % self.shards

    def shard_sql(self, column: str) -> str:
        """:meth:`shard_of` as an SQL expression over an id column (bigint ids give the
        same non-negative remainder as Python for ids >= 0)."""
        return f"({column} % {self.shards})::int"

    def _tag(self, shard: int) -> str:
        return f"{{{self.scope}:{shard}}}"

    def pending(self, shard: int) -> str:
        return f"{self._tag(shard)}:pending"

    def inflight(self, shard: int) -> str:
        return f"{self._tag(shard)}:inflight"

    def batch(self, shard: int) -> str:
        return f"{self._tag(shard)}:batch"

    def seq(self, shard: int) -> str:
        return f"{self._tag(shard)}:seq"

    def gen(self, shard: int) -> str:
        return f"{self._tag(shard)}:gen"

    def layout(self, shard: int) -> str:
        return f"{self._tag(shard)}:layout"

    def flushing(self, shard: int) -> str:
        return f"{self._tag(shard)}:flushing"

    def accepted(self, shard: int) -> str:
        return f"{self._tag(shard)}:accepted"

    def held(self, shard: int) -> str:
        return f"{self._tag(shard)}:held"

    def seen(self, shard: int, slot: int, bucket: int) -> str:
        """Pairs a view policy remembers from time slot ``slot`` (engine/policy.py)."""
        return f"{self._tag(shard)}:seen:{slot}:{bucket}"

    def uniques(self, row_id: int, code: str) -> str:
        """The HyperLogLog of the visitors of one row's view counter ``code``."""
        return f"{self._tag(self.shard_of(row_id))}:uv:{code}:{row_id}"

    def uniques_scratch(self, shard: int) -> str:
        return f"{self._tag(shard)}:uvtmp"

    def read_model_state(self, shard: int) -> str:
        return f"{self._tag(shard)}:rm"

    def read_model_prefix(self, shard: int) -> str:
        """What a row's read model key starts with (release.lua appends "<table>:<id>")."""
        return f"{self._tag(shard)}:rm:"

    def read_model(self, table: str, row_id: int) -> str:
        """The read model of one row (engine/readmodel.py)."""
        return f"{self.read_model_prefix(self.shard_of(row_id))}{table}:{row_id}"

    def exists(self, shard: int, table: str) -> str:
        return f"{self._tag(shard)}:ex:{table}"

    def exists_sparse(self, shard: int, table: str) -> str:
        return f"{self._tag(shard)}:exs:{table}"

    def shard_keys(self, shard: int) -> list[str]:
        """The four keys of the claim/release/read scripts, in their KEYS order."""
        return [self.pending(shard), self.inflight(shard), self.batch(shard), self.seq(shard)]

    def stats(self) -> str:
        return f"{{{self.scope}}}:stats"

    def runs(self, kind: str) -> str:
        """The last runs of ``kind`` ("flush" or "reconcile"), newest first."""
        return f"{{{self.scope}}}:runs:{kind}"

    def activity(self) -> str:
        return f"{{{self.scope}}}:activity"

    def rebuilding(self, table: str) -> str:
        """Lock (token, TTL) of one table's existence-index rebuild."""
        return f"{{{self.scope}}}:rebuilding:{table}"

    def exists_offset(self, row_id: int) -> int:
        """Bit offset of a row in its shard's existence bitmap; bit 0 marks 'loaded'. Above
        MAX_BIT_OFFSET the row is kept in the shard's set (:meth:`exists_sparse`)."""
        return row_id // self.shards + 1

    def in_bitmap(self, row_id: int) -> bool:
        return self.exists_offset(row_id) <= MAX_BIT_OFFSET


def field(row_id: int, code: str) -> str:
    return f"{row_id}:{code}"


def hour_of(ms: int) -> int:
    """The UTC hour (whole hours since the epoch) of a time in ms since the epoch."""
    return ms // HOUR_MS


def bucket_field(row_id: int, code: str, hour: int) -> str:
    """The pending field of a row's views of one hour (see :func:`hour_of`)."""
    return f"{row_id}:{code}{BUCKET_SEP}{hour}"


def held_field(code: str, reason: str) -> str:
    """Field of the held hash: views of counter ``code`` held back for ``reason``."""
    return f"{code}:{reason}"


def spool_fences(keys: Keys, shard: int) -> str:
    """The shard's fences of the view spools (engine/spool.py): spool id -> the offset
    in that spool up to which the shard has its views."""
    return f"{keys._tag(shard)}:spool"
