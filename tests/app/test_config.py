"""Configuration: defaults, environment, test_config; and the id converter's regex."""

import random
import re

import pytest

from app import config
from app.counters import counters
from app.ids import MAX_ID, at_most
from engine import DEFAULT_SHARDS
from engine.settings import FLUSH_THREADS
from tests.app.conftest import PREFIX


def test_defaults():
    c = config.load({})
    assert c["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
    assert c["REDIS_URL"] == c["COUNTERS_REDIS_URL"] == "redis://127.0.0.1:6379/0"
    assert c["COUNTERS_FLUSH_INTERVAL"] == 2 and c["COUNTERS_RECONCILE_INTERVAL"] == 3600
    assert c["COUNTERS_SHARDS"] == DEFAULT_SHARDS and c["COUNTERS_SCOPE"] == "ctr"
    assert c["COUNTERS_REDIS_CLUSTER"] is False and c["ADMIN_TOKEN"] is None
    assert c["MAX_CONTENT_LENGTH"] == 1024 * 1024
    assert c["COUNTERS_FLUSH_THREADS"] == FLUSH_THREADS
    assert c["COUNTERS_COALESCE_MS"] == 0 and c["DATABASE_PING_IDLE_S"] == 5


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@h:5/db", "postgresql+psycopg2://u:p@h:5/db"),
        ("postgresql://u@h/db", "postgresql+psycopg2://u@h/db"),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2://u@h/db"),
    ],
)
def test_database_url_is_rewritten_to_psycopg2(url, expected):
    assert config.load({"DATABASE_URL": url})["SQLALCHEMY_DATABASE_URI"] == expected


def test_environment_then_test_config():
    env = {
        "REDIS_URL": "redis://r:6379/1",
        "ADMIN_TOKEN": "s3cret",
        "COUNTERS_FLUSH_INTERVAL": "0.5",
        "COUNTERS_RECONCILE_INTERVAL": "60",
        "COUNTERS_SHARDS": "32",
        "COUNTERS_SCOPE": "site1",
        "COUNTERS_REDIS_CLUSTER": "1",
        "COUNTERS_FLUSH_THREADS": "3",
    }
    c = config.load(env, {"COUNTERS_SHARDS": 8})
    assert c["COUNTERS_REDIS_URL"] == "redis://r:6379/1"  # the counters follow REDIS_URL
    assert c["ADMIN_TOKEN"] == "s3cret" and c["COUNTERS_SCOPE"] == "site1"
    assert (c["COUNTERS_FLUSH_INTERVAL"], c["COUNTERS_RECONCILE_INTERVAL"]) == (0.5, 60.0)
    assert c["COUNTERS_SHARDS"] == 8 and c["COUNTERS_REDIS_CLUSTER"] is True
    assert c["COUNTERS_FLUSH_THREADS"] == 3
    split = config.load({**env, "COUNTERS_REDIS_URL": "redis://cluster:7000/0"})
    assert split["COUNTERS_REDIS_URL"] == "redis://cluster:7000/0"
    assert split["REDIS_URL"] == "redis://r:6379/1"  # the broker stays


@pytest.mark.parametrize(
    "env",
    [
        {"COUNTERS_SHARDS": "many"},
        {"COUNTERS_FLUSH_INTERVAL": "0"},
        {"COUNTERS_FLUSH_INTERVAL": "x"},
        {"COUNTERS_FLUSH_THREADS": "0"},
        {"COUNTERS_COALESCE_MS": "-1"},
        {"DATABASE_PING_IDLE_S": "-1"},
    ],
)
def test_bad_values_fail_loudly(env):
    with pytest.raises(ValueError):
        config.load(env)


def test_id_regex_accepts_exactly_1_to_max_bigint():
    rx = re.compile(at_most(MAX_ID))
    rng = random.Random(7)
    samples = [*range(0, 2000), MAX_ID - 1, MAX_ID, MAX_ID + 1, 10**19, 10**18]
    samples += [rng.randrange(0, 2 * MAX_ID) for _ in range(5000)]
    for value in samples:
        assert bool(rx.fullmatch(str(value))) == (1 <= value <= MAX_ID), value
    for text in ("01", "007", "", "-1", "1a", "1.0", "+1"):
        assert not rx.fullmatch(text)


def test_the_app_builds_its_counters_from_the_settings(make_app):
    # a scope of its own: the run's scope is recorded with the fixtures' 4 shards
    app = make_app(COUNTERS_SHARDS=8, COUNTERS_FLUSH_THREADS=3, COUNTERS_SCOPE=f"{PREFIX}s8")
    engine = counters.get(app)
    assert engine.shards == 8 and engine.flush_threads == 3
    assert app.extensions["counters"].coalescer is None  # off by default
    on = make_app(COUNTERS_COALESCE_MS=25)
    assert on.extensions["counters"].coalescer.interval_s == 0.025
