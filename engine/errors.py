"""Every exception the engine raises; driver errors are translated at the boundary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis.exceptions
import sqlalchemy.exc


class CounterError(Exception):
    """Base class of every engine error."""


class UnknownCounter(CounterError, KeyError):
    """A counter name that is not in the registry."""


class BufferUnavailable(CounterError):
    """Redis (the delta buffer) could not be reached or answered with an error."""


class LayoutMismatch(BufferUnavailable):
    """This process counts with another shard count than the one recorded, or a reshard
    is draining the shards: nothing was written (a 503, like Redis being down)."""


class StoreUnavailable(CounterError):
    """Postgres (the counter store) could not be reached or a statement failed."""


class UnknownWindow(CounterError, ValueError):
    """A time window the engine does not keep (see engine.windows.WINDOWS)."""


class TargetMissing(CounterError):
    """The row a counted write points at (a liked post, a commented article) is gone."""


class UnsafeRedis(CounterError):
    """Redis is set up so that it may evict pending deltas (``maxmemory-policy allkeys-*``)."""


@contextmanager
def redis_errors(what: str) -> Iterator[None]:
    """Re-raise any redis-py error (a whole cluster down included) as BufferUnavailable."""
    try:
        yield
    except (redis.exceptions.RedisError, redis.exceptions.RedisClusterException) as exc:
        raise BufferUnavailable(f"{what}: {exc}") from exc


@contextmanager
def sql_errors(what: str) -> Iterator[None]:
    """Re-raise any SQLAlchemy/DBAPI error as StoreUnavailable."""
    try:
        yield
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise StoreUnavailable(f"{what}: {exc}") from exc
