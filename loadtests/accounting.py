"""What the load acknowledged, written by the Locust users and read back by the runner.

Every counted request is logged twice, as JSON lines in a per-process file:
``{"n", "op", "tt", "id", "u", "t"}`` before it is sent and ``{"n", "st", "t"}`` once
its status is known (``st`` 0: no response; ``t``: wall-clock time, s). A request with
no second line (its greenlet or process died) or with ``st`` 0 or 5xx may or may not
have counted: it is *unknown*, an upper bound, never an acknowledgement. Only 2xx
counts. A run may declare some answers *refused* instead (``build_ledger(refused=...)``):
statuses that it knows changed nothing.

Ops: ``view`` (page GET or beacon; with ``"v"``, the visitor's ``vid`` cookie, it was
sent under the view policy: a visitor's views of one target count once, as the run is
shorter than the dedupe window), ``bot_view`` (a crawler's, into ``bot_view_count``),
``share``, ``comment`` (a comment created on
the target), ``like``/``unlike``/``collect``/``uncollect`` (per-user toggles; the
toggles a run leaves in place are derived from each user's last answered request),
and ``create`` (a post created during the load, logged once its id is known).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

TOGGLES = {"like": ("like", True), "unlike": ("like", False)}
TOGGLES |= {"collect": ("collect", True), "uncollect": ("collect", False)}
EVENTS = ("view", "bot_view", "share", "comment")

# Which column of which table each op moves, by target type.
TABLES = {"post": "posts", "article": "articles", "comment": "comments"}
TABLES |= {"post_comment": "post_comments"}
COLUMNS = {"view": "view_count", "share": "shares_count", "comment": "comments_count"}
COLUMNS |= {"bot_view": "bot_view_count"}
COLUMNS |= {"like": "likes_count", "collect": "collects_count"}

PRESENT, ABSENT, UNKNOWN = "present", "absent", "unknown"


class EventLog:
    """Append-only, line-buffered JSON-lines log of one process (safe across greenlets)."""

    def __init__(self, directory: str | os.PathLike, name: str | None = None) -> None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        name = name or f"events-{os.getpid()}"
        self.path = Path(directory) / f"{name}.jsonl"
        self._file = open(self.path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        self._lock = threading.Lock()
        self._n = 0

    def sent(
        self,
        op: str,
        target_type: str,
        target_id: int,
        user_id: int | None,
        visitor: str | None = None,
    ) -> int:
        """Log a request about to be sent; returns its number for :meth:`answered`."""
        with self._lock:
            self._n += 1
            n = self._n
            rec = {"n": n, "op": op, "tt": target_type, "id": target_id, "u": user_id}
            if visitor is not None:
                rec["v"] = visitor
            rec["t"] = round(time.time(), 3)
            self._file.write(json.dumps(rec, separators=(",", ":")) + "\n")
        return n

    def answered(self, n: int, status: int) -> None:
        with self._lock:
            rec = {"n": n, "st": status, "t": round(time.time(), 3)}
            self._file.write(json.dumps(rec, separators=(",", ":")) + "\n")

    def close(self) -> None:
        with self._lock:
            self._file.close()


@dataclass(frozen=True)
class Event:
    op: str
    target_type: str
    target_id: int
    user_id: int | None
    status: int | None  # None: the request was logged as sent and never answered
    sent_at: float | None = None  # wall-clock s (None in logs written before times)
    answered_at: float | None = None
    visitor: str | None = None  # the view's vid cookie, under the view policy

    @property
    def acked(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def unknown(self) -> bool:
        """No answer, or a 5xx: the server may or may not have counted it."""
        return self.status is None or self.status == 0 or self.status >= 500


def read_events(directory: str | os.PathLike) -> Iterator[Event]:
    """Every logged request, per file in the order it was sent."""
    for path in sorted(Path(directory).glob("*.jsonl")):
        sent: dict[int, dict] = {}
        status: dict[int, int] = {}
        answered_at: dict[int, float] = {}
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    continue  # torn last line of a killed process: its twin decides
                rec = json.loads(line)
                if "op" in rec:
                    sent[rec["n"]] = rec
                else:
                    status[rec["n"]] = rec["st"]
                    answered_at[rec["n"]] = rec.get("t")
        for n in sorted(sent):
            rec = sent[n]
            yield Event(
                rec["op"],
                rec["tt"],
                int(rec["id"]),
                rec.get("u"),
                status.get(n),
                rec.get("t"),
                answered_at.get(n),
                rec.get("v"),
            )


Key = tuple[str, int]  # (target_type, id)


@dataclass
class Bounds:
    """The value a counter must have: at least ``lo`` and at most ``lo + unknown``."""

    lo: int = 0
    unknown: int = 0

    @property
    def hi(self) -> int:
        return self.lo + self.unknown

    def admits(self, value: int) -> bool:
        return self.lo <= value <= self.hi

    def __str__(self) -> str:
        return str(self.lo) if not self.unknown else f"{self.lo}..{self.hi}"


@dataclass
class Ledger:
    """Expected counter values, from the acknowledged requests of a run."""

    # (column, target_type, id) -> Bounds
    expected: defaultdict[tuple[str, str, int], Bounds] = field(
        default_factory=lambda: defaultdict(Bounds)
    )
    # (user, action, target_type, id) -> PRESENT / ABSENT / UNKNOWN
    toggles: dict[tuple[int, str, str, int], str] = field(default_factory=dict)
    statuses: Counter = field(default_factory=Counter)  # (op, status) -> n
    requests: int = 0
    unknown: int = 0
    never_answered: int = 0
    # (op, status) answers known to have changed nothing, though not 2xx/4xx
    refused: frozenset[tuple[str, int]] = frozenset()
    created: set[Key] = field(default_factory=set)  # posts created during the load
    # (visitor, target_type, id) -> True once a view of it was acknowledged, False while
    # its views are all unknown: under the view policy each pair counts exactly once
    visits: dict[tuple[str, str, int], bool] = field(default_factory=dict)

    def is_unknown(self, ev: Event) -> bool:
        return ev.unknown and (ev.op, ev.status) not in self.refused

    def add(self, ev: Event) -> None:
        if ev.op == "create":
            if ev.acked:
                self.created.add((ev.target_type, ev.target_id))
            return
        self.requests += 1
        self.statuses[(ev.op, ev.status)] += 1
        unknown = self.is_unknown(ev)
        if unknown:
            self.unknown += 1
        if ev.status is None:
            self.never_answered += 1
        if ev.op == "view" and ev.visitor is not None:
            pair = (ev.visitor, ev.target_type, ev.target_id)
            if ev.acked:
                self.visits[pair] = True
            elif unknown:
                self.visits.setdefault(pair, False)
            return
        if ev.op in EVENTS:
            bounds = self.expected[(COLUMNS[ev.op], ev.target_type, ev.target_id)]
            if ev.acked:
                bounds.lo += 1
            elif unknown:
                bounds.unknown += 1
            return
        action, on = TOGGLES[ev.op]
        key = (ev.user_id, action, ev.target_type, ev.target_id)
        # POST answers 201 (added) or 200 (was there); DELETE 204 (removed) or 404
        # (was not there): any of them leaves the toggle in a known state.
        if ev.acked or ev.status == 404:
            self.toggles[key] = PRESENT if on else ABSENT
        elif unknown:
            self.toggles[key] = UNKNOWN
        # any other 4xx changed nothing

    def finish(self) -> Ledger:
        """Fold the toggles' final states into the expected like/collect counts, and the
        visitors' views into the expected view counts."""
        for (_visitor, tt, tid), acked in self.visits.items():
            bounds = self.expected[(COLUMNS["view"], tt, tid)]
            if acked:
                bounds.lo += 1
            else:
                bounds.unknown += 1
        for (_user, action, tt, tid), state in self.toggles.items():
            bounds = self.expected[(COLUMNS[action], tt, tid)]
            if state == PRESENT:
                bounds.lo += 1
            elif state == UNKNOWN:
                bounds.unknown += 1
        return self

    def viewers(self) -> dict[Key, Bounds]:
        """Distinct visitors per target: what its unique-viewer estimate estimates."""
        out: defaultdict[Key, Bounds] = defaultdict(Bounds)
        for (_visitor, tt, tid), acked in self.visits.items():
            if acked:
                out[(tt, tid)].lo += 1
            else:
                out[(tt, tid)].unknown += 1
        return out

    def present(self) -> set[tuple[int, str, str, int]]:
        return {k for k, s in self.toggles.items() if s == PRESENT}

    def maybe(self) -> set[tuple[int, str, str, int]]:
        return {k for k, s in self.toggles.items() if s == UNKNOWN}

    def count(self, predicate) -> int:
        return sum(n for (op, st), n in self.statuses.items() if predicate(op, st))


def build_ledger(events: Iterable[Event], refused: Iterable[tuple[str, int]] = ()) -> Ledger:
    ledger = Ledger(refused=frozenset(refused))
    for ev in events:
        ledger.add(ev)
    return ledger.finish()


@dataclass
class Mismatch:
    what: str
    key: str
    expected: str
    actual: int | str

    def __str__(self) -> str:
        return f"{self.what} {self.key}: expected {self.expected}, got {self.actual}"


def compare(
    ledger: Ledger,
    actual: dict[tuple[str, str, int], int],
    what: str,
) -> tuple[list[Mismatch], int]:
    """Check every ``(column, target_type, id) -> value`` against the ledger.

    Targets the run never touched must be 0. Returns the mismatches and how many
    values were checked.
    """
    bad = []
    for key, value in sorted(actual.items()):
        bounds = ledger.expected.get(key, Bounds())
        if not bounds.admits(value):
            col, tt, tid = key
            bad.append(Mismatch(what, f"{tt} {tid} {col}", str(bounds), value))
    return bad, len(actual)
