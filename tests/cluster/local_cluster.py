"""A throwaway 3-master Redis Cluster on 127.0.0.1, started from the ``redis-server``
and ``redis-cli`` binaries (no replicas, no persistence, files in a temp folder)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from harness.ports import free_ports
from harness.processes import spawn, stop_all

MASTERS = 3
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
BUS_PORT_OFFSET = 10_000  # a cluster node also listens on port + 10000


def _wait(what: str, ready, timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if ready():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"Redis Cluster: timed out waiting for {what}")
        time.sleep(0.05)


class LocalCluster:
    """Start with :meth:`start`, always :meth:`stop` (kills only the processes it started)."""

    def __init__(
        self, server: str, cli: str, node_timeout_ms: int = 15_000, options: dict | None = None
    ) -> None:
        self.server = server
        self.cli = cli
        self.options = options or {}  # server options over the defaults (e.g. appendonly)
        # how long a silent master may stay unanswered before the others mark it failed
        self.node_timeout_ms = node_timeout_ms
        self.dir = Path(tempfile.mkdtemp(prefix="ctr-cluster-"))
        self.ports: list[int] = []
        self.procs: list[subprocess.Popen] = []

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)

    def start(self) -> None:
        self.ports = free_ports(MASTERS, also_free_at=BUS_PORT_OFFSET)
        for p in self.ports:
            options = {
                "port": p,
                "bind": "127.0.0.1",
                "cluster-enabled": "yes",
                "cluster-config-file": f"nodes-{p}.conf",
                "cluster-node-timeout": self.node_timeout_ms,
                "dir": self.dir,
                "save": "",
                "appendonly": "no",
                "daemonize": "no",
                **self.options,
            }
            if options["appendonly"] == "yes":  # one folder each: they share self.dir
                options["appenddirname"] = f"appendonlydir-{p}"
            argv = [self.server]
            for name, value in options.items():
                argv += [f"--{name}", str(value)]
            self.procs.append(spawn(argv, cwd=self.dir, output=self.dir / f"redis-{p}.log"))
        for p, proc in zip(self.ports, self.procs, strict=True):
            _wait(f"127.0.0.1:{p} to answer", lambda p=p, proc=proc: self._up(p, proc))
        subprocess.run(
            [self.cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in self.ports)]
            + ["--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT_S,
        )
        _wait("cluster_state:ok on every node", self._ok)

    def ask(self, port: int, *command):
        """Send one command to one node (not through the cluster client)."""
        with self.node(port) as node:
            return node.execute_command(*command)

    def _up(self, port: int, proc: subprocess.Popen) -> bool:
        if proc.poll() is not None:  # e.g. its port was taken since we picked it
            log = (self.dir / f"redis-{port}.log").read_text(errors="replace")
            raise RuntimeError(f"redis-server on port {port} exited:\n{log[-2000:]}")
        return self.ask(port, "PING")

    def _ok(self) -> bool:
        for p in self.ports:
            info = self.ask(p, "CLUSTER INFO")
            if info["cluster_state"] != "ok" or int(info["cluster_known_nodes"]) != MASTERS:
                return False
        return True

    def flushall(self) -> None:
        """Empty every master (this cluster is ours: we created it)."""
        for p in self.ports:
            self.ask(p, "FLUSHALL")

    def kill(self, port: int) -> None:
        """SIGKILL the master on ``port``, as a crash would."""
        proc = self.procs[self.ports.index(port)]
        proc.kill()
        proc.wait()

    def stop(self) -> None:
        stop_all(self.procs, STOP_TIMEOUT_S)
        self.procs = []
        shutil.rmtree(self.dir, ignore_errors=True)
