"""The system under test: migrations, and the web, worker and beat processes
(``harness.stack``), with their logs in ``out/logs``; and the HTTP session to it.

Every process is started from the main thread (``harness.processes``: its parent-death
signal is tied to the forking thread).
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
from pathlib import Path

import requests

from harness import ROOT
from harness import stack as harness_stack
from harness.ports import free_port
from harness.processes import tail

from .servers import Servers

_local = threading.local()


def http() -> requests.Session:
    """This thread's HTTP session to the app, ignoring any proxy in the environment
    (all traffic goes to 127.0.0.1)."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
        session.trust_env = False
    return session


class Stack(harness_stack.Stack):
    """web (gunicorn), worker (Celery) and beat (RedBeat) on 127.0.0.1, logs in ``out/logs``."""

    def __init__(
        self,
        servers: Servers,
        out: Path,
        *,
        web_workers: int,
        web_threads: int,
        worker_concurrency: int,
        flush_interval_s: float,
        keep_alive_s: int = 10,
        view_policy: str = "raw",
    ) -> None:
        self.admin_token = secrets.token_urlsafe(18)
        env = dict(os.environ)
        env.update(
            DATABASE_URL=servers.database_url,
            REDIS_URL=servers.redis_url,
            ADMIN_TOKEN=self.admin_token,
            COUNTERS_FLUSH_INTERVAL=str(flush_interval_s),
            RATELIMIT_ENABLED="0",  # hundreds of users sign up from 127.0.0.1
            COUNTERS_VIEW_POLICY=view_policy,  # raw: every view counts, unless --visitors
            PYTHONUNBUFFERED="1",
        )
        if servers.counters_redis_url:
            env["COUNTERS_REDIS_URL"] = servers.counters_redis_url
        super().__init__(
            env,
            port=free_port(),
            web=[
                *("--workers", str(web_workers)),
                *("--threads", str(web_threads), "--backlog", "2048"),
                # Longer than any user's think time: a server closing an idle keep-alive
                # connection just as the client reuses it loses that request.
                *("--keep-alive", str(keep_alive_s)),
            ],
            worker=[
                "--loglevel=INFO",
                *(f"--concurrency={worker_concurrency}", "--without-gossip", "--without-mingle"),
            ],
            beat=["--loglevel=INFO"],
            logs=out / "logs",
        )

    def run(self, name: str, cmd: list[str], timeout: float) -> None:
        """Run a one-off command to completion; raise with its output on failure."""
        log = self.log_path(name)
        with open(log, "ab") as f:
            proc = subprocess.run(
                cmd, env=self.env, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, timeout=timeout
            )
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd[1:])} failed: see {log}\n{tail(log)}")

    def migrate(self) -> None:
        self.run("migrate", [sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"], 120)

    def admin(self, method: str, path: str, timeout: float = 30.0) -> dict:
        resp = http().request(
            method,
            f"{self.base_url}/api/admin/counters/{path}",
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=timeout,
        )
        resp.raise_for_status()
        return resp.json()
