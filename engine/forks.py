"""Fork safety of the Postgres pools the engine uses.

A forked child (a Celery prefork pool process, a gunicorn worker of a preloaded app)
inherits its parent's pooled Postgres connections: two processes then talk over one
socket and read each other's replies (``error with status PGRES_TUPLES_OK``, rows of
another query). After a fork the child drops the inherited pool without closing its
connections (they are the parent's), as SQLAlchemy recommends, and opens its own.
Redis clients need nothing: redis-py pools notice the fork themselves.
"""

from __future__ import annotations

import os
import weakref

import sqlalchemy as sa

_engines: weakref.WeakSet[sa.Engine] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for engine in list(_engines):
        engine.dispose(close=False)


def forget_pool_after_fork(engine: sa.Engine) -> None:
    """Have every child forked from now on start ``engine`` with a fresh pool."""
    _engines.add(engine)


os.register_at_fork(after_in_child=_after_fork_in_child)
