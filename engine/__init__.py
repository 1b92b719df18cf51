"""Batched write-behind counters: Redis deltas, applied to Postgres exactly once.

The core (this package's top-level modules) needs only redis and SQLAlchemy: pass a
Redis client, a SQLAlchemy engine and a :class:`Registry` to :class:`Counters`, the one
door. Integrations sit beside it, imported only by those who use them:
``engine.flask`` (extension, CLI, admin blueprint), ``engine.celery`` (tasks and RedBeat
schedule), ``engine.prometheus`` (collector), ``engine.alembic`` (schema steps).
"""

from .buffer import FLUSH_LOCK_TTL_MS, Outcome
from .clients import redis_client
from .coalesce import ViewCoalescer
from .counters import Counters
from .errors import (
    BufferUnavailable,
    CounterError,
    LayoutMismatch,
    StoreUnavailable,
    TargetMissing,
    UnknownCounter,
    UnknownWindow,
    UnsafeRedis,
)
from .flush import FlushSummary, ShardFlush
from .flush_combined import COMBINE_MAX_FIELDS
from .keys import DEFAULT_SCOPE, DEFAULT_SHARDS
from .policy import ViewPolicy, Visit
from .reconcile import Fix, ReconcileResult
from .registry import Counter, Registry
from .retention import RetentionResult
from .spool import SpooledCoalescer
from .window_read import Series
from .windows import TRENDING_WINDOWS, WINDOWS

__all__ = [
    "COMBINE_MAX_FIELDS",
    "DEFAULT_SCOPE",
    "FLUSH_LOCK_TTL_MS",
    "DEFAULT_SHARDS",
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
    "TargetMissing",
    "UnknownCounter",
    "UnknownWindow",
    "RetentionResult",
    "Series",
    "SpooledCoalescer",
    "TRENDING_WINDOWS",
    "WINDOWS",
    "UnsafeRedis",
    "ViewCoalescer",
    "ViewPolicy",
    "Visit",
    "redis_client",
]
