"""``/healthz`` (Redis and Postgres reachable) and ``/metrics`` (Prometheus text)."""

from __future__ import annotations

import prometheus_client
import sqlalchemy as sa
from flask import Blueprint, Response, current_app

from ..counters import get_counters
from ..extensions import db
from ..metrics import exposition

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
            ("redis", lambda: get_counters().buffer.redis.ping()),
            ("postgres", _postgres),
        )
        if _check(name, probe)
    ]
    if down:
        return {"status": "unavailable", "down": down}, 503
    return {"status": "ok"}


@bp.get("/metrics")
def metrics():
    """The engine's shared state, read from Redis now: the same in every process."""
    return Response(exposition(get_counters()), content_type=prometheus_client.CONTENT_TYPE_LATEST)
