"""``/healthz`` (Redis and Postgres reachable) and ``/metrics`` (Prometheus text)."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Blueprint, current_app

from ..counters import counters
from ..extensions import db

bp = Blueprint("health", __name__)


def _check(name: str, probe) -> str | None:
    try:
        probe()
    except Exception as exc:  # any failure of a probe means "down", never a 500
        current_app.logger.warning("health: %s is down: %s", name, exc)
        return name
    return None


def _postgres() -> None:
    with db.engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))


@bp.get("/healthz")
def healthz():
    down = [
        name
        for name, probe in (
            ("redis", counters.ping),
            ("postgres", _postgres),
        )
        if _check(name, probe)
    ]
    # what the counter buffer's Redis keeps across a crash, as reported at startup
    durability = counters.state().durability
    if down:
        return {"status": "unavailable", "down": down, "durability": durability}, 503
    return {"status": "ok", "durability": durability}


# The engine's shared state, read from Redis at scrape time: the same in every process.
bp.add_url_rule("/metrics", "metrics", counters.metrics_view)
