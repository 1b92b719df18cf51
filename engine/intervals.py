"""The scheduled jobs, flush, reconcile and bucket retention: their RedBeat entry names, the setting
of their configured interval, and the intervals accepted at runtime. No Celery here, so
the Flask side can validate and describe them without the [celery] extra."""

from __future__ import annotations

import math

FLUSH_ENTRY = "flush-counters"
RECONCILE_ENTRY = "reconcile-counters"
RETENTION_ENTRY = "retain-counter-buckets"
# kind -> (entry name, config key of its static interval)
KINDS = {
    "flush": (FLUSH_ENTRY, "COUNTERS_FLUSH_INTERVAL"),
    "reconcile": (RECONCILE_ENTRY, "COUNTERS_RECONCILE_INTERVAL"),
    "retention": (RETENTION_ENTRY, "COUNTERS_RETENTION_INTERVAL"),
}
# Accepted intervals (s): below them beat and the database would only churn; above,
# the backlog (flush) or the drift (reconcile) would go unattended for too long, or the
# trending windows (retention moves them) would lag an hour boundary by more than an hour.
BOUNDS_S = {
    "flush": (0.5, 86_400.0),
    "reconcile": (10.0, 30 * 86_400.0),
    "retention": (10.0, 3_600.0),
}


class BadInterval(ValueError):
    """An interval that is not a number of seconds within ``BOUNDS_S``."""


def validate(kind: str, seconds) -> float:
    """``seconds`` as a float, or BadInterval saying what is accepted."""
    if kind not in KINDS:
        raise BadInterval(f"unknown schedule {kind!r}: use one of {', '.join(KINDS)}")
    low, high = BOUNDS_S[kind]
    ok = isinstance(seconds, (int, float)) and not isinstance(seconds, bool)
    if not ok or not math.isfinite(seconds) or not low <= seconds <= high:
        raise BadInterval(f"{kind} interval must be a number of seconds from {low:g} to {high:g}")
    return float(seconds)
