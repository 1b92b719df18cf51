"""The registry: which counters exist, where they live in Postgres, how to recount them."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import UnknownCounter
from .policy import ViewPolicy

IDENT = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_CODE = re.compile(r"^[A-Za-z0-9]{1,8}$")


@dataclass(frozen=True)
class Counter:
    """One integer column that the engine keeps.

    ``code`` is the short, stable tag stored in every Redis field of this counter:
    changing it while deltas are pending orphans them, so never reuse or rename one.
    ``recount`` is an SQL query taking ``:ids`` (bound as a Postgres array literal,
    ``'{1,2,3}'``: write ``= ANY(CAST(:ids AS bigint[]))``) and returning rows ``(id,
    value)``; ids it does not return count as 0. ``None`` means the counter
    has no exact source (views) and reconcile leaves it alone.
    ``indexed``: its table gets an existence index in Redis, so that ``Counters.view``
    refuses ids that do not exist without asking Postgres. Default: counters without a
    recount (events such as views, whose only guard against bad ids is that index).
    ``buckets``: every increment also goes to the row's bucket of the hour it was
    accepted in, written by the same flush transaction (engine/windows.py), so
    ``Counters.window_series`` can answer "how many per hour / day" exactly. Only for
    counters without a recount: a reconcile would move the column away from its buckets.
    ``trending``: keep per-row totals of the last 24 hours and 7 days too, so
    ``Counters.trending`` ranks rows without summing buckets (implies ``buckets``).
    """

    table: str
    column: str
    code: str
    recount: str | None = None
    indexed: bool | None = None
    policy: ViewPolicy | None = None
    buckets: bool = False
    trending: bool = False

    @property
    def bucketed(self) -> bool:
        return self.buckets or self.trending

    @property
    def checks_existence(self) -> bool:
        return self.recount is None if self.indexed is None else self.indexed

    @property
    def name(self) -> str:
        return f"{self.table}.{self.column}"

    def __post_init__(self) -> None:
        for ident in (self.table, self.column):
            if not IDENT.match(ident):
                raise ValueError(f"not a plain SQL identifier: {ident!r}")
        if not _CODE.match(self.code):
            raise ValueError(f"counter code must be 1-8 alphanumerics: {self.code!r}")
        if self.bucketed and self.recount is not None:
            raise ValueError(f"{self.name}: buckets are for counters without a recount")


class Registry:
    """An immutable set of counters, looked up by name (``table.column``) or code."""

    def __init__(self, counters: Iterable[Counter]) -> None:
        self._by_name: dict[str, Counter] = {}
        self._by_code: dict[str, Counter] = {}
        self._of_table: dict[str, tuple[Counter, ...]] = {}
        self._uniques_of: dict[str, tuple[Counter, ...]] = {}
        for c in counters:
            if c.name in self._by_name or c.code in self._by_code:
                raise ValueError(f"duplicate counter name or code: {c.name} / {c.code}")
            self._by_name[c.name] = c
            self._by_code[c.code] = c
        for c in self:
            if c.policy is None:
                continue
            bots = c.policy.bots
            if bots is not None and f"{c.table}.{bots}" not in self._by_name:
                raise ValueError(f"{c.name}: its policy's bots counter {c.table}.{bots} is missing")
            uniques = c.policy.uniques
            if uniques is not None and (
                not IDENT.match(uniques) or uniques in self.columns(c.table)
            ):
                raise ValueError(
                    f"{c.name}: uniques column {uniques!r} must be a plain SQL "
                    "identifier and not a counter's column"
                )

    def __iter__(self):
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def get(self, name: str) -> Counter:
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownCounter(name) from None

    def by_code(self, code: str) -> Counter | None:
        return self._by_code.get(code)

    def tables(self) -> list[str]:
        return sorted({c.table for c in self})

    def indexed_tables(self) -> list[str]:
        """Tables that get an existence index (see ``Counter.indexed``)."""
        return sorted({c.table for c in self if c.checks_existence})

    def checked_table(self, table: str) -> str:
        """``table`` if some counter lives in it (safe to put in SQL), else UnknownCounter."""
        if not any(c.table == table for c in self):
            raise UnknownCounter(table)
        return table

    def bucketed_codes(self) -> str:
        """The codes of bucketed counters as the increment script takes them:
        ``",c1,c2,"``, or ``""`` when none is."""
        codes = sorted(c.code for c in self if c.bucketed)
        return f",{','.join(codes)}," if codes else ""

    def bucketed(self, name: str) -> Counter:
        """The counter ``name`` if it keeps buckets, else UnknownCounter."""
        counter = self.get(name)
        if not counter.bucketed:
            raise UnknownCounter(f"{name} keeps no time buckets")
        return counter

    def of_table(self, table: str) -> tuple[Counter, ...]:
        found = self._of_table.get(table)
        if found is None:  # a registry never changes: kept per table
            found = self._of_table[table] = tuple(c for c in self if c.table == table)
        return found

    def columns(self, table: str) -> set[str]:
        return {c.column for c in self if c.table == table}

    def bots_of(self, counter: Counter) -> Counter | None:
        """The counter that takes crawlers' views of ``counter`` (its policy's ``bots``)."""
        if counter.policy is None or counter.policy.bots is None:
            return None
        return self.get(f"{counter.table}.{counter.policy.bots}")

    def uniques_of(self, table: str) -> tuple[Counter, ...]:
        """The table's view counters that keep a unique-viewer estimate."""
        found = self._uniques_of.get(table)
        if found is None:
            found = tuple(c for c in self.of_table(table) if c.policy and c.policy.uniques)
            self._uniques_of[table] = found
        return found
