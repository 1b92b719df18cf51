"""Pooled database connections are checked before use only when they sat idle.

``pool_pre_ping`` sends ``SELECT 1`` at every checkout: on a page view, whose whole job
is one query, that is a second round trip every time. A connection used a moment ago
is almost always alive; one that sat in the pool for ``idle_s`` may have been cut by a
Postgres restart, a failover or a firewall, so it is pinged, and replaced if the ping
fails. A connection that dies while in steady use fails its statement once (the
request gets a 503); SQLAlchemy then drops every pooled connection made before the
failure, and the next checkout opens a fresh one. ``idle_s = 0`` pings at every
checkout, like ``pool_pre_ping``.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from sqlalchemy import event

_CHECKED_IN = "checked_in_at"


def ping_when_idle(engine: sa.Engine, idle_s: float) -> None:
    dbapi_error = engine.dialect.loaded_dbapi.Error

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection, record) -> None:
        record.info[_CHECKED_IN] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _check_idle(dbapi_connection, record, proxy) -> None:
        since = record.info.pop(_CHECKED_IN, None)
        if since is None or time.monotonic() - since < idle_s:
            return  # a new connection, or one in steady use
        try:
            engine.dialect.do_ping(dbapi_connection)
        except dbapi_error as exc:
            # the pool discards this connection and checks out another
            raise sa.exc.DisconnectionError(f"idle connection is gone: {exc}") from exc
