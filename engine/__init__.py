"""Batched write-behind counters: Redis deltas, applied to Postgres exactly once.

No Flask or Celery here: pass in a Redis client, a SQLAlchemy engine and a Registry.
"""

from .buffer import Outcome
from .clients import redis_client
from .counters import DEFAULT_SHARDS, Counters
from .errors import (
    BufferUnavailable,
    CounterError,
    LayoutMismatch,
    StoreUnavailable,
    UnknownCounter,
    UnsafeRedis,
)
from .flush import FLUSH_THREADS, FlushSummary, ShardFlush
from .reconcile import Fix, ReconcileResult, lock_target
from .registry import Counter, Registry

__all__ = [
    "DEFAULT_SHARDS",
    "FLUSH_THREADS",
    "BufferUnavailable",
    "Counter",
    "CounterError",
    "Counters",
    "Fix",
    "FlushSummary",
    "LayoutMismatch",
    "Outcome",
    "ReconcileResult",
    "Registry",
    "ShardFlush",
    "StoreUnavailable",
    "UnknownCounter",
    "UnsafeRedis",
    "lock_target",
    "redis_client",
]
