"""What only a Redis Cluster can show: where the keys land, work spread over three
masters, scripts missing on a node, a master going down."""

import random
import re
import threading
from collections import Counter as Tally
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

from engine import BufferUnavailable, Counters, Outcome
from engine.clients import command_retries, redis_client
from harness.redis_server import valkey_server_binary
from tests.cluster.local_cluster import LocalCluster
from tests.engine.conftest import REGISTRY, seed, stored
from tests.engine.test_durability import fenced_waitaofs, monitored
from tests.engine.test_resend import ambiguous, script_call
from tests.proxy import TcpProxy

SHARDS = 16
TAG = re.compile(r"^\{ctr:(\d+)\}:")


def keys_by_master(local_cluster) -> dict[int, set[str]]:
    """Every key of the cluster, asked of each master directly (not through the client)."""
    return {p: {k.decode() for k in local_cluster.ask(p, "KEYS", "*")} for p in local_cluster.ports}


def master_of(cluster: RedisCluster, key: str) -> int:
    return cluster.get_node_from_key(key).port


def test_every_key_of_a_shard_lives_on_the_master_of_its_slot(make_counters, sql, r, local_cluster):
    counters = make_counters(shards=SHARDS)
    ids = seed(sql, "items", 10 * SHARDS)
    counters.existence.ensure_loaded(["items", "notes"])
    counters.incr_many([("items.hits", i, 1) for i in ids])
    claimed = range(0, SHARDS, 2)
    for s in claimed:
        claim = counters.buffer.claim(s, f"t{s}")
        assert counters.buffer.assign_seq(s, claim.token, 1000 + s) == 1000 + s
    counters.incr_many([("items.likes", i, 1) for i in ids])  # pending again beside inflight
    where: dict[int, set[int]] = {}
    found: dict[int, set[str]] = {}
    for port, names in keys_by_master(local_cluster).items():
        for name in names:
            shard = int(TAG.match(name).group(1))
            where.setdefault(shard, set()).add(port)
            found.setdefault(shard, set()).add(name)
            assert master_of(r, name) == port
    assert sorted(where) == list(range(SHARDS))
    assert all(len(ports) == 1 for ports in where.values()), where
    keys = counters.keys
    for s in range(SHARDS):
        want = {keys.pending(s), keys.exists(s, "items"), keys.exists(s, "notes")}
        if s in claimed:
            want |= {keys.inflight(s), keys.batch(s), keys.seq(s)}
        assert want <= found[s]


def test_shards_spread_over_the_three_masters(make_counters, sql, r, local_cluster):
    counters = make_counters(shards=SHARDS)
    ids = seed(sql, "items", SHARDS)
    counters.incr_many([("items.hits", i, 1) for i in ids])
    owners = {master_of(r, counters.keys.pending(s)) for s in range(SHARDS)}
    assert owners == set(local_cluster.ports)
    holding = {p for p, names in keys_by_master(local_cluster).items() if names}
    assert holding == set(local_cluster.ports)
    # the engine tests run with 4 and 8 shards: they reach every master too
    for n in (4, 8):
        assert len({master_of(r, counters.keys.pending(s)) for s in range(n)}) == 3


def test_flush_of_deltas_on_every_shard_and_master_is_exact(make_counters, sql, r, local_cluster):
    counters = make_counters(shards=SHARDS)
    items, notes = seed(sql, "items", 300), seed(sql, "notes", 100)
    counters.existence.ensure_loaded(["items", "notes"])
    expected: Tally = Tally()
    lock = threading.Lock()
    stop = threading.Event()

    def writer(n: int) -> None:
        rnd = random.Random(n)
        for _ in range(300):
            pick = rnd.random()
            row = rnd.choice(items)
            if pick < 0.4:
                d = rnd.randint(-2, 5)
                counters.incr("items.likes", row, d, check_exists=True)
                got = {("items", "likes", row): d}
            elif pick < 0.7:
                note = rnd.choice(notes)
                counters.incr_many([("items.hits", row, 2), ("notes.hits", note, 1)])
                got = {("items", "hits", row): 2, ("notes", "hits", note): 1}
            else:
                outcome, _, _ = counters.bump_and_read("items.hits", row)
                assert outcome is Outcome.COUNTED
                got = {("items", "hits", row): 1}
            with lock:
                expected.update(got)

    def flusher() -> None:
        while not stop.is_set():
            counters.flush_all()

    writers = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    flushers = [threading.Thread(target=flusher) for _ in range(2)]
    for t in writers + flushers:
        t.start()
    for t in writers:
        t.join()
    # one more round of deltas on every shard, so the last flush spans all masters
    counters.incr_many([("items.hits", i, 1) for i in items[:SHARDS]])
    expected.update({("items", "hits", i): 1 for i in items[:SHARDS]})
    stop.set()
    for t in flushers:
        t.join()
    counters.flush_all()
    for table, col in (("items", "hits"), ("items", "likes"), ("notes", "hits")):
        got = stored(sql, table, col)
        assert got == {i: expected[(table, col, i)] for i in got}, (table, col)
    assert counters.buffer.dirty_shards() == []
    for names in keys_by_master(local_cluster).values():
        assert not [n for n in names if n.endswith((":pending", ":inflight", ":batch"))]


def test_live_read_of_many_ids_across_masters(make_counters, sql, r):
    counters = make_counters(shards=SHARDS)
    ids = seed(sql, "items", 500)
    counters.incr_many([("items.hits", i, i % 7) for i in ids])
    counters.flush_all()  # in Postgres
    counters.incr_many([("items.hits", i, 10) for i in ids] + [("items.likes", i, 1) for i in ids])
    for s in range(0, SHARDS, 3):  # claimed, not applied: inflight
        counters.buffer.claim(s, f"t{s}")
    counters.incr_many([("items.hits", i, 100) for i in ids[::2]])  # pending beside inflight
    want = {
        i: {"hits": i % 7 + 10 + (100 if n % 2 == 0 else 0), "likes": 1} for n, i in enumerate(ids)
    }
    missing = [ids[-1] + k for k in range(1, SHARDS + 1)]  # one per shard, no row
    assert counters.read("items", ids + missing) == want
    outcome, counts, _ = counters.bump_and_read("items.hits", ids[0])
    assert outcome is Outcome.NOT_LOADED and counts is None
    counters.existence.ensure_loaded(["items"])
    outcome, counts, _ = counters.bump_and_read("items.hits", ids[0])
    assert outcome is Outcome.COUNTED
    assert counts == {"hits": want[ids[0]]["hits"] + 1, "likes": 1}
    counters.flush_all()
    counters.flush_all()
    want[ids[0]]["hits"] += 1
    assert stored(sql, "items", "hits") == {i: w["hits"] for i, w in want.items()}
    assert counters.read("items", ids) == want


def test_existence_index_on_the_cluster(make_counters, sql, r, local_cluster):
    counters = make_counters(shards=SHARDS)
    ids = seed(sql, "items", 3 * SHARDS)
    absent = [ids[-1] + k for k in range(1, SHARDS + 1)]
    assert counters.incr("items.hits", ids[0], check_exists=True) is Outcome.NOT_LOADED
    assert r.keys() == []
    assert counters.existence.ensure_loaded(["items"]) == {"items": len(ids)}
    assert counters.existence.loaded("items")
    bitmaps = {
        p: {n for n in names if n.endswith(":ex:items")}
        for p, names in keys_by_master(local_cluster).items()
    }
    assert all(bitmaps.values()) and sum(map(len, bitmaps.values())) == SHARDS
    before = set(r.keys())
    assert {counters.incr("items.hits", i, check_exists=True) for i in absent} == {Outcome.MISSING}
    assert set(r.keys()) == before  # a refused increment creates no key on any master
    assert {counters.incr("items.hits", i, check_exists=True) for i in ids} == {Outcome.COUNTED}
    counters.existence.unmark("items", ids[:SHARDS])
    assert {counters.incr("items.hits", i, check_exists=True) for i in ids[:SHARDS]} == {
        Outcome.MISSING
    }
    counters.existence.mark("items", ids[:1])
    assert counters.incr("items.hits", ids[0], check_exists=True) is Outcome.COUNTED
    local_cluster.flushall()  # the cluster lost its data: callers must ask Postgres again
    assert not counters.existence.loaded("items")
    assert counters.incr("items.hits", ids[1], check_exists=True) is Outcome.NOT_LOADED
    assert counters.existence.ensure_loaded(["items", "notes"]) == {"items": len(ids), "notes": 0}
    assert counters.incr("items.hits", ids[1], check_exists=True) is Outcome.COUNTED


def test_scripts_missing_on_every_master_are_loaded_again_and_run_once(
    make_counters, sql, r, local_cluster
):
    counters = make_counters(shards=SHARDS)
    ids = seed(sql, "items", 4 * SHARDS)
    counters.existence.ensure_loaded(["items"])

    def forget_scripts() -> None:  # as a restarted or newly promoted master would
        for port in local_cluster.ports:
            local_cluster.ask(port, "SCRIPT", "FLUSH")

    counters.incr_many([("items.hits", i, 1) for i in ids])
    forget_scripts()
    counters.incr_many([("items.hits", i, 2) for i in ids])  # pipelined EVALSHA
    forget_scripts()
    assert counters.read("items", ids) == {i: {"hits": 3, "likes": 0} for i in ids}
    forget_scripts()
    assert counters.bump_and_read("items.likes", ids[0]) == (
        Outcome.COUNTED,
        {"hits": 3, "likes": 1},
        {},
    )
    forget_scripts()
    counters.incr("items.likes", ids[1], 5)
    forget_scripts()
    counters.flush_all()
    assert stored(sql, "items", "hits") == {i: 3 for i in ids}
    assert stored(sql, "items", "likes") == {i: {ids[0]: 1, ids[1]: 5}.get(i, 0) for i in ids}


@pytest.fixture
def doomed_cluster(local_cluster):
    """A cluster of its own, for a test that kills masters (``local_cluster`` is asked
    for so that a missing redis-server skips or fails as everywhere else here)."""
    # survivors keep serving until they mark the dead master failed: not within a test
    cluster = LocalCluster(local_cluster.server, local_cluster.cli, node_timeout_ms=600_000)
    try:
        cluster.start()
        client = RedisCluster(host="127.0.0.1", port=cluster.ports[0])
        yield cluster, client
        client.close()
    finally:
        cluster.stop()


def test_master_down_fails_its_shards_with_buffer_unavailable(doomed_cluster, sql):
    cluster, client = doomed_cluster
    counters = Counters(client, sql, REGISTRY, shards=SHARDS)
    ids = seed(sql, "items", SHARDS)
    counters.incr_many([("items.hits", i, 1) for i in ids])
    dead = master_of(client, counters.keys.pending(counters.keys.shard_of(ids[0])))
    cluster.kill(dead)
    on_dead = [i for i in ids if master_of(client, counters.keys.pending(i % SHARDS)) == dead]
    alive = [i for i in ids if i not in on_dead]
    with pytest.raises(BufferUnavailable):
        counters.incr("items.hits", on_dead[0])
    with pytest.raises(BufferUnavailable):
        counters.incr_many([("items.hits", i, 1) for i in ids])
    with pytest.raises(BufferUnavailable):
        counters.flush_all()
    # the survivors serve their shards until they agree the node failed (node timeout)
    for i in alive:
        counters.incr("items.hits", i)


def test_every_master_down_raises_buffer_unavailable(doomed_cluster, sql):
    cluster, client = doomed_cluster
    counters = Counters(client, sql, REGISTRY, shards=SHARDS)
    counters.incr("items.hits", 1)
    for port in cluster.ports:
        cluster.kill(port)
    with pytest.raises(BufferUnavailable):
        counters.incr("items.hits", 1)
    with pytest.raises(BufferUnavailable):
        counters.flush_all()


@pytest.fixture
def aof_cluster(local_cluster):
    """A Valkey 8 cluster of its own with append-only files (WAITAOF works there)."""
    server = valkey_server_binary()
    cli = str(Path(server).with_name("valkey-cli"))
    cluster = LocalCluster(server, cli, options={"appendonly": "yes", "appendfsync": "everysec"})
    try:
        cluster.start()
        client = RedisCluster(host="127.0.0.1", port=cluster.ports[0])
        yield cluster, client
        client.close()
    finally:
        cluster.stop()


def test_a_resumed_batch_is_fenced_on_the_master_of_its_shard(aof_cluster, sql):
    cluster, client = aof_cluster
    counters = Counters(client, sql, REGISTRY, shards=SHARDS)
    ids = seed(sql, "items", SHARDS)
    first = cluster.ports[0]  # a shard on another master: the fence must follow the slot
    shard = next(s for s in range(SHARDS) if master_of(client, counters.keys.pending(s)) != first)
    row = next(i for i in ids if counters.keys.shard_of(i) == shard)
    counters.incr("items.hits", row, 5)
    dead = Counters(RedisCluster(host="127.0.0.1", port=first), sql, REGISTRY, shards=SHARDS)
    claim = dead.buffer.claim(shard, "dead-flusher")
    dead.buffer.assign_seq(shard, claim.token, counters.flusher._next_seq())
    owner = master_of(client, counters.keys.pending(shard))
    with monitored(cluster.node(owner)) as feed:
        result = counters.flush_shard(shard)
    assert result.resumed and not result.already_applied
    assert fenced_waitaofs(feed) == [True]
    assert stored(sql, "items", "hits")[row] == 5
    report = counters.durability()
    nodes = sorted(n["node"] for n in report["nodes"])
    assert nodes == sorted(f"127.0.0.1:{p}" for p in cluster.ports)
    assert report["aof"] is True and report["waitaof"] is True


@pytest.fixture
def proxied_cluster(local_cluster, r):
    """A counter client that reaches each master through a TCP proxy of its own."""
    proxies = {p: TcpProxy("127.0.0.1", p) for p in local_cluster.ports}

    def remap(address):
        return "127.0.0.1", proxies[address[1]].port

    url = f"redis://127.0.0.1:{proxies[local_cluster.ports[0]].port}/0"
    client = redis_client(url, cluster=True, address_remap=remap)
    yield proxies, client
    client.close()
    for proxy in proxies.values():
        proxy.close()


@pytest.mark.parametrize("call", ["incr", "incr_many"])
def test_an_increment_whose_reply_is_lost_is_applied_once_on_a_cluster(
    call, proxied_cluster, sql, r
):
    proxies, client = proxied_cluster
    assert command_retries(client) == 0
    counters = Counters(client, sql, REGISTRY, shards=SHARDS)
    ids = seed(sql, "items", SHARDS)
    counters.incr_many([("items.hits", i, 1) for i in ids])  # connections and scripts
    target = ids[0]
    owner = master_of(r, counters.keys.pending(counters.keys.shard_of(target)))
    proxies[owner].lose_next_reply(script_call)
    if call == "incr":
        outcome = ambiguous(lambda: counters.incr("items.hits", target, 10))
        want = {i: 11 if i == target else 1 for i in ids}
    else:  # a pipeline over every master; one of them loses its replies
        outcome = ambiguous(lambda: counters.incr_many([("items.hits", i, 10) for i in ids]))
        want = {i: 11 for i in ids}
    assert {i: c["hits"] for i, c in counters.read("items", ids).items()} == want
    assert outcome == "unavailable"


def test_the_dashboards_activity_and_last_runs_on_the_cluster(make_counters, sql, r):
    counters = make_counters(shards=SHARDS)
    items = seed(sql, "items", SHARDS)  # one row on every shard, so every master
    counters.record_activity()
    counters.incr_many([("items.hits", i, 2) for i in items])
    assert counters.report()["pending"] == SHARDS
    counters.flush_all()
    columns = counters.activity()
    # increments since the sample above (this call's own sample, if a minute began since)
    assert columns["accepted"]["items.hits"][-1] == SHARDS
    assert columns["pending"][-1] == 0 and columns["lag_s"][-1] is None
    assert [run["flushed"] for run in counters.recent_runs()["flush"]] == [SHARDS]
