"""The engine over the last hour, minute by minute, as every process sees it.

One sample per minute (increments accepted so far per counter code, counters pending,
the age of the oldest pending delta) in one Redis hash, ``{ctr}:activity``. Any process
may sample: the flush task, a dashboard's poll. The first sample of a minute wins (HSETNX
in one script), so several web processes and workers keep one series between them and
never double a minute. The hash keeps KEEP_MINUTES minutes and expires TTL_MS after its
last sample, so a scope nobody runs any more leaves nothing behind.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from .errors import redis_errors
from .keys import Keys

MINUTE_MS = 60_000
KEEP_MINUTES = 90  # samples kept: an hour's chart, and a margin
TTL_MS = 2 * 3_600_000  # the series expires this long after its last sample


@dataclass(frozen=True)
class Sample:
    """The engine at one instant."""

    at_ms: int
    accepted: dict[str, int]  # counter code -> increments accepted so far (all shards)
    pending: int  # counters waiting for Postgres (inflight included)
    lag_s: float | None  # age of the oldest pending delta; None: nothing pending

    def encode(self) -> str:
        return json.dumps({"t": self.at_ms, "a": self.accepted, "p": self.pending, "l": self.lag_s})

    @classmethod
    def decode(cls, raw: bytes | str) -> Sample:
        d = json.loads(raw)
        return cls(int(d["t"]), {k: int(v) for k, v in d["a"].items()}, int(d["p"]), d["l"])


class Activity:
    def __init__(self, redis, keys: Keys) -> None:
        self.redis = redis
        self.key = keys.activity()
        script = resources.files(__package__).joinpath("lua", "activity.lua").read_text()
        self._record = redis.register_script(script)

    def has_minute(self, at_ms: int) -> bool:
        """Whether the minute of ``at_ms`` has its sample already (one round trip)."""
        with redis_errors("activity"):
            return bool(self.redis.hexists(self.key, str(at_ms // MINUTE_MS)))

    def record(self, sample: Sample) -> list[Sample]:
        """Keep ``sample`` as its minute's, unless that minute has one; returns every kept
        sample, oldest first (one round trip)."""
        minute = sample.at_ms // MINUTE_MS
        args = [minute, sample.encode(), minute - KEEP_MINUTES, TTL_MS]
        with redis_errors("activity"):
            raw = self._record(keys=[self.key], args=args)
        samples = [Sample.decode(value) for value in raw[1::2]]
        return sorted(samples, key=lambda s: s.at_ms)


def increase(before: int, after: int) -> int:
    """What a running count grew by; one that went down was reset (Redis restored from
    an older dump, or wiped) and counts from zero."""
    return after - before if after >= before else after


def series(samples: list[Sample], now: Sample, minutes: int) -> dict:
    """The last ``minutes`` as chart columns: ``t`` (s), ``pending``, ``lag_s``, and
    ``accepted`` ``{code: [...]}``, increments per minute. A point's increments are those
    since the sample before it, scaled to a minute (None for the first, which has none
    before it); the last point is ``now``, and its increments are those of the minute so
    far (since the last sample), not scaled."""
    since_ms = now.at_ms - minutes * MINUTE_MS
    points = [*(s for s in samples if since_ms - MINUTE_MS <= s.at_ms < now.at_ms), now]
    codes = sorted({code for s in points for code in s.accepted})
    out: dict = {"t": [], "pending": [], "lag_s": [], "accepted": {c: [] for c in codes}}
    for prev, point in zip([None, *points], points, strict=False):
        if point.at_ms < since_ms:
            continue
        out["t"].append(point.at_ms / 1000)
        out["pending"].append(point.pending)
        out["lag_s"].append(point.lag_s)
        span_min = (point.at_ms - prev.at_ms) / MINUTE_MS if prev is not None else 0
        scale = 1.0 if point is now or span_min <= 0 else 1 / span_min
        for code in codes:
            if prev is None:
                out["accepted"][code].append(None)
                continue
            grew = increase(prev.accepted.get(code, 0), point.accepted.get(code, 0))
            out["accepted"][code].append(round(grew * scale, 2))
    return out
