"""Every ``COUNTERS_*`` setting: its default, how it is parsed, what it means.

This table is the one place they are defined. The Flask extension ``setdefault``s them
into ``app.config``; :func:`from_environ` reads them from the environment for sites
(and the Celery side) that configure from variables; :func:`validate` checks a whole
mapping. Units are in the names' docs: intervals are seconds, ``_MS`` milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .flush import FLUSH_THREADS
from .keys import DEFAULT_SCOPE, DEFAULT_SHARDS
from .policy import DEDUPE, MODES, WINDOW_S
from .readmodel import DEFAULT_TTL_S as READ_MODEL_TTL_S
from .retention import DAILY_RETENTION_DAYS, HOURLY_RETENTION_DAYS, MIN_HOURLY_RETENTION_DAYS


def parse_bool(value: str) -> bool:
    text = value.strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(value)


@dataclass(frozen=True)
class Setting:
    """One configuration key: its default, the parser of its environment variable of the
    same name (None: not read from the environment), and what it means."""

    key: str
    default: Any
    parse: Callable[[str], Any] | None
    doc: str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "COUNTERS_REDIS_URL",
        None,
        str,
        "where the counter buffer lives (None: the site's REDIS_URL)",
    ),
    Setting(
        "COUNTERS_REDIS_CLUSTER",
        False,
        parse_bool,
        "1: COUNTERS_REDIS_URL names a node of a Redis Cluster",
    ),
    Setting(
        "COUNTERS_SHARDS",
        DEFAULT_SHARDS,
        int,
        "shards (Redis hashes, ledger rows) per scope; see docs/operations.md to change it",
    ),
    Setting(
        "COUNTERS_SCOPE",
        DEFAULT_SCOPE,
        str,
        "names this site's Redis keys, ledger rows and RedBeat entries",
    ),
    Setting("COUNTERS_FLUSH_INTERVAL", 2.0, float, "s between scheduled flushes"),
    Setting("COUNTERS_RECONCILE_INTERVAL", 3600.0, float, "s between scheduled exact recounts"),
    Setting(
        "COUNTERS_FLUSH_GROUP_SIZE",
        4,
        int,
        "dirty shards per flush_shards task when a flush fans out to several workers",
    ),
    Setting(
        "COUNTERS_FLUSH_THREADS",
        FLUSH_THREADS,
        int,
        "shards one flush applies at once, each on its own database connection",
    ),
    Setting(
        "COUNTERS_ALLOW_EVICTION",
        False,
        parse_bool,
        "1: start even when Redis may evict keys without a TTL (maxmemory-policy "
        "allkeys-*), accepting that pending deltas can be lost",
    ),
    Setting(
        "COUNTERS_HOURLY_RETENTION_DAYS",
        HOURLY_RETENTION_DAYS,
        int,
        "days hourly view buckets are kept before they are rolled into daily ones "
        f"(kept {DAILY_RETENTION_DAYS} days); at least {MIN_HOURLY_RETENTION_DAYS}",
    ),
    Setting(
        "COUNTERS_RETENTION_INTERVAL",
        60.0,
        float,
        "s between scheduled bucket retention runs (they also move the trending windows)",
    ),
    Setting(
        "COUNTERS_COALESCE_MS",
        0.0,
        float,
        "opt-in: tally views in the web process and push them every this many ms "
        "(a hard kill loses up to one interval); 0 = off",
    ),
    Setting(
        "COUNTERS_VIEW_POLICY",
        DEDUPE,
        str,
        "dedupe: counters with a ViewPolicy count a visitor once per window, crawlers "
        "apart, no author's own views; raw: every view counts (load tests, benchmarks)",
    ),
    Setting(
        "COUNTERS_VIEW_WINDOW_S",
        WINDOW_S,
        int,
        "s; a visitor's repeat views of a row within this window add nothing",
    ),
    Setting(
        "COUNTERS_READ_MODEL_TTL_S",
        READ_MODEL_TTL_S,
        int,
        "s a row's read model (its stored counts and page columns, kept exact in Redis "
        "by the flush) lives after it was read from Postgres; 0 = off: pages read Postgres",
    ),
    Setting(
        "COUNTERS_VISITOR_SALT",
        None,
        str,
        "secret mixed into the hash of address + User-Agent that names a visitor with "
        "no cookie (None: the app's SECRET_KEY, else the scope); keep it stable",
    ),
    Setting(
        "COUNTERS_COALESCE_SPOOL_DIR",
        None,
        str,
        "with COUNTERS_COALESCE_MS: each web process writes its tallied views to a file "
        "here before answering, so a hard kill loses none (a local directory; None = off)",
    ),
)

BY_KEY = {s.key: s for s in SETTINGS}


def defaults(table: Iterable[Setting] = SETTINGS) -> dict[str, Any]:
    return {s.key: s.default for s in table}


def from_environ(environ: Mapping[str, str], table: Iterable[Setting] = SETTINGS) -> dict:
    """The settings of ``table`` that ``environ`` sets, parsed; an empty value counts as
    unset. Raises ValueError naming the variable on a bad value."""
    out = {}
    for setting in table:
        value = environ.get(setting.key)
        if setting.parse is None or value is None or value == "":
            continue
        try:
            out[setting.key] = setting.parse(value)
        except ValueError:
            raise ValueError(f"{setting.key}={value!r} is not a valid value") from None
    return out


def validate(config: Mapping[str, Any]) -> None:
    """Raise ValueError, naming the setting, when a value is out of range."""
    if config["COUNTERS_SHARDS"] < 1:
        raise ValueError("COUNTERS_SHARDS must be at least 1")
    if config["COUNTERS_FLUSH_INTERVAL"] <= 0 or config["COUNTERS_RECONCILE_INTERVAL"] <= 0:
        raise ValueError("COUNTERS_*_INTERVAL must be positive (seconds)")
    if config["COUNTERS_FLUSH_GROUP_SIZE"] < 1:
        raise ValueError("COUNTERS_FLUSH_GROUP_SIZE must be at least 1 (shards per task)")
    if config["COUNTERS_COALESCE_MS"] < 0:
        raise ValueError("COUNTERS_COALESCE_MS must be 0 (off) or a positive number of ms")
    if config["COUNTERS_HOURLY_RETENTION_DAYS"] < MIN_HOURLY_RETENTION_DAYS:
        raise ValueError(
            f"COUNTERS_HOURLY_RETENTION_DAYS must be at least {MIN_HOURLY_RETENTION_DAYS} "
            "(the 7d trending window reads hourly buckets)"
        )
    if config["COUNTERS_RETENTION_INTERVAL"] <= 0:
        raise ValueError("COUNTERS_RETENTION_INTERVAL must be positive (seconds)")
    if config["COUNTERS_VIEW_POLICY"] not in MODES:
        raise ValueError(f"COUNTERS_VIEW_POLICY must be one of {', '.join(MODES)}")
    if config["COUNTERS_VIEW_WINDOW_S"] < 1:
        raise ValueError("COUNTERS_VIEW_WINDOW_S must be at least 1 (seconds)")
    if config["COUNTERS_READ_MODEL_TTL_S"] < 0:
        raise ValueError("COUNTERS_READ_MODEL_TTL_S must be 0 (off) or positive (seconds)")
    if config["COUNTERS_FLUSH_THREADS"] < 1:
        raise ValueError("COUNTERS_FLUSH_THREADS must be at least 1 (shards flushed at once)")
    if config.get("COUNTERS_COALESCE_SPOOL_DIR") and config["COUNTERS_COALESCE_MS"] <= 0:
        raise ValueError("COUNTERS_COALESCE_SPOOL_DIR needs COUNTERS_COALESCE_MS (the coalescer)")
