"""The engine's exactly-once suite (tests/engine), collected again on the Redis Cluster.

Nothing is copied: the test functions are imported, and the fixtures they ask for
(``r``, ``make_counters``, ``counters``, ``sql``, ``engine_db``) come from
tests/cluster/conftest.py, bound to the cluster. The victim process of the fault tests
gets the cluster too.
"""

import pytest

from tests.engine.test_big_ids import *  # noqa: F403
from tests.engine.test_bounded import *  # noqa: F403
from tests.engine.test_buffer import *  # noqa: F403
from tests.engine.test_faults import *  # noqa: F403
from tests.engine.test_flush import *  # noqa: F403
from tests.engine.test_reconcile import *  # noqa: F403
from tests.engine.test_reshard import *  # noqa: F403

# They use no Redis of ours, so the cluster would add nothing: the dead-Redis case builds
# a single-node client by construction, and test_cluster.py checks real slot placement.
LEFT_OUT = (
    "test_redis_down_raises_buffer_unavailable",
    "test_every_key_of_a_shard_sits_in_one_cluster_slot",
    "test_engine_imports_neither_flask_nor_celery",
    # counts single-connection sends; a cluster pipeline talks to each node (and
    # redis-py asks a node for the keys of each EVALSHA it routes)
    "test_pipelined_scripts_are_one_round_trip_and_survive_a_script_flush",
)
for _name in LEFT_OUT:
    del globals()[_name]


@pytest.fixture
def victim_redis(cluster_url) -> list[str]:
    return [cluster_url, "cluster"]
