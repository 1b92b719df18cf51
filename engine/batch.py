"""A claimed batch split into per-table, per-column Postgres arrays, parsed in bulk.

A shard's batch can hold 100k fields. Decoding and splitting them one at a time in
Python cost as much as Postgres takes to apply them, so the claim reply stays a flat
list of bytes (``name, delta, name, delta, …``) and is matched here by two regular
expressions over the joined reply (counter fields, bucket fields), whose matches are
grouped by code in one sort: no Python step per field, and one pass over the reply
however many counters the registry has. Ids and deltas stay the digit strings Redis
sent and go straight into ``'{…}'`` array literals; Postgres sorts and joins them.
"""

from __future__ import annotations

import re
from collections import Counter as Tally
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter

from .keys import BUCKET_SEP, META_FIELDS, OLDEST_FIELD
from .registry import Registry

_OLDEST = OLDEST_FIELD.encode()
_SEP = BUCKET_SEP.encode()
# names are "<id>:<code>" (bucket fields "<id>:<code>@<hour>") and deltas bare integers,
# so a match starts on a name; bookkeeping fields (keys.META_FIELDS) start with "_"
_FIELD = re.compile(rb"^(-?\d+):([^\n@]+)\n(-?\d+)$", re.MULTILINE)
_BUCKET_FIELD = re.compile(
    rb"^(-?\d+):([^\n@]+)" + re.escape(_SEP) + rb"(\d+)\n(-?\d+)$", re.MULTILINE
)
_CODE = itemgetter(1)


def _by_code(found: list[tuple]) -> dict[bytes, list[tuple]]:
    """Matches (id, code, …) grouped by code, each group in reply order."""
    found.sort(key=_CODE)
    return {code: list(rows) for code, rows in groupby(found, key=_CODE)}


def _literal(items) -> str:
    return (b"{" + b",".join(items) + b"}").decode("ascii")


@dataclass
class ColumnDeltas:
    """One column's deltas: ``ids[i]`` gets ``deltas[i]``; digit strings as Redis sent them."""

    column: str
    ids: tuple[bytes, ...]
    deltas: tuple[bytes, ...]

    def arrays(self) -> tuple[str, str]:
        return _literal(self.ids), _literal(self.deltas)


@dataclass
class TableDeltas:
    table: str
    columns: list[ColumnDeltas] = field(default_factory=list)

    def row_count(self) -> int:
        """Distinct rows the batch touches in this table."""
        if len(self.columns) == 1:
            return len(self.columns[0].ids)
        return len(set().union(*(c.ids for c in self.columns)))

    def fields_per_row(self) -> Tally:
        """``{id: number of deltas}``; used only to account for rows that are gone."""
        return Tally(int(i) for c in self.columns for i in c.ids)


@dataclass
class BucketDeltas:
    """One bucketed counter's hourly deltas: row ``ids[i]`` got ``deltas[i]`` in hour
    ``hours[i]`` (engine/keys.py ``hour_of``); digit strings as Redis sent them."""

    table: str
    column: str
    ids: tuple[bytes, ...]
    hours: tuple[bytes, ...]
    deltas: tuple[bytes, ...]

    def without(self, gone: set[int]) -> BucketDeltas:
        """These deltas but those of rows in ``gone`` (deleted before the flush)."""
        keep = [k for k, i in enumerate(self.ids) if int(i) not in gone]
        return BucketDeltas(
            self.table,
            self.column,
            tuple(self.ids[k] for k in keep),
            tuple(self.hours[k] for k in keep),
            tuple(self.deltas[k] for k in keep),
        )

    def arrays(self) -> tuple[str, str, str]:
        return _literal(self.ids), _literal(self.hours), _literal(self.deltas)


@dataclass
class Batch:
    tables: dict[str, TableDeltas]
    size: int  # counter delta fields in the batch (bucket fields not included)
    unknown: int  # fields of codes no registered counter has: dropped
    oldest_ms: int | None
    buckets: list[BucketDeltas] = field(default_factory=list)


def split(registry: Registry, flat: list[bytes]) -> Batch:
    """Parse a claim's flat ``[name, delta, …]`` reply (bytes) into a :class:`Batch`."""
    names = flat[0::2]
    oldest = None
    if _OLDEST in names:
        oldest = int(flat[2 * names.index(_OLDEST) + 1])
    blob = b"\n".join(flat)
    # bookkeeping fields (keys.META_FIELDS) start with "_"; names and digits never do,
    # and only bucket fields hold keys.BUCKET_SEP
    bucket_fields = blob.count(_SEP)
    size = len(names) - blob.count(b"\n_") - blob.startswith(b"_") - bucket_fields
    tables: dict[str, TableDeltas] = {}
    buckets: list[BucketDeltas] = []
    plain = _by_code(_FIELD.findall(blob))
    hourly = _by_code(_BUCKET_FIELD.findall(blob)) if bucket_fields else {}
    matched = bucket_matched = 0
    for counter in sorted(registry, key=lambda c: (c.table, c.column)):
        code = counter.code.encode()
        found = hourly.get(code) if counter.bucketed else None
        if found:
            bucket_matched += len(found)
            ids, _, hours, deltas = zip(*found, strict=True)
            buckets.append(BucketDeltas(counter.table, counter.column, ids, hours, deltas))
        pairs = plain.get(code)
        if not pairs:
            continue
        matched += len(pairs)
        ids, _, deltas = zip(*pairs, strict=True)
        tables.setdefault(counter.table, TableDeltas(counter.table)).columns.append(
            ColumnDeltas(counter.column, ids, deltas)
        )
    # bucket fields of codes that keep no buckets (any more) are dropped like unknown ones
    unknown = size - matched + bucket_fields - bucket_matched
    return Batch(tables, size, unknown, oldest, buckets)


def decoded(flat: list) -> dict[str, int]:
    """The batch as ``{field: delta}`` (for inspection; the flush never needs it)."""
    out = {}
    for i in range(0, len(flat), 2):
        name = flat[i].decode() if isinstance(flat[i], bytes) else flat[i]
        if name not in META_FIELDS:
            out[name] = int(flat[i + 1])
    return out
