"""The system under test: scratch servers, migrations, and the web, worker and beat processes.

Every process is started from the main thread, in its own session (so a SIGKILL
can take a Celery worker together with its pool children) and with a parent-death
signal, so a killed runner leaves nothing behind. Only processes started here are
ever signalled, always by their own process group id.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import redis
import requests
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
OWN_REDIS_URL = "redis://127.0.0.1:6379/10"  # a db number the runner owns and flushes
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG fires when the forking *thread* exits: hence main thread only.
    if _libc is not None:
        _libc.prctl(1, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_local = threading.local()


def http() -> requests.Session:
    """This thread's HTTP session to the app, ignoring any proxy in the environment
    (all traffic goes to 127.0.0.1)."""
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = requests.Session()
        session.trust_env = False
    return session


def _with_database(url: str, name: str) -> str:
    return urlsplit(url)._replace(path=f"/{name}").geturl()


class Servers:
    """Postgres and Redis for one run: the environment's, or scratch ones this run owns.

    ``DATABASE_URL`` / ``REDIS_URL`` are used as given. Unset, a database
    ``ctrload_<random>`` is created through ``LOADTEST_PG_ADMIN_URL`` and dropped at
    the end, and the Redis db ``LOADTEST_REDIS_URL`` (default db 10) is flushed before
    and after: only that one.
    """

    def __init__(self) -> None:
        self.database_url = os.environ.get("DATABASE_URL")
        self.redis_url = os.environ.get("REDIS_URL")
        self.scratch_db: str | None = None
        self.admin_url = os.environ.get("LOADTEST_PG_ADMIN_URL", PG_ADMIN_URL)
        self.owns_redis = not self.redis_url

    def __enter__(self) -> Servers:
        if self.owns_redis:
            self.redis_url = os.environ.get("LOADTEST_REDIS_URL", OWN_REDIS_URL)
            with redis.Redis.from_url(self.redis_url) as r:
                r.flushdb()
        else:
            self._refuse_stale_deltas()
        if not self.database_url:
            self.scratch_db = f"ctrload_{uuid.uuid4().hex[:8]}"
            admin = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{self.scratch_db}"'))
            admin.dispose()
            self.database_url = _with_database(self.admin_url, self.scratch_db)
        return self

    def _refuse_stale_deltas(self) -> None:
        # Deltas left by an earlier run would land on this run's rows (ids restart at 1).
        with redis.Redis.from_url(self.redis_url) as r:
            for pattern in ("*:pending", "*:inflight"):
                for key in r.scan_iter(match=pattern, count=1000):
                    raise SystemExit(
                        f"REDIS_URL holds unflushed counter deltas ({key!r}); "
                        "flush them into their own database first, or leave REDIS_URL "
                        "unset to use a scratch Redis db"
                    )

    def __exit__(self, *exc) -> None:
        if self.owns_redis:
            with contextlib.suppress(redis.RedisError), redis.Redis.from_url(self.redis_url) as r:
                r.flushdb()
        if self.scratch_db:
            admin = sa.create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.scratch_db}" WITH (FORCE)'))
            admin.dispose()


class Stack:
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
    ) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.admin_token = secrets.token_urlsafe(18)
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ)
        self.env.update(
            DATABASE_URL=servers.database_url,
            REDIS_URL=servers.redis_url,
            ADMIN_TOKEN=self.admin_token,
            COUNTERS_FLUSH_INTERVAL=str(flush_interval_s),
            PYTHONUNBUFFERED="1",
        )
        py = sys.executable
        self.commands = {
            "web": [
                *(py, "-m", "gunicorn", "app:create_app()"),
                *("--bind", f"127.0.0.1:{self.port}", "--workers", str(web_workers)),
                *("--threads", str(web_threads), "--backlog", "2048"),
                # Longer than any user's think time: a server closing an idle keep-alive
                # connection just as the client reuses it loses that request.
                *("--keep-alive", str(keep_alive_s)),
            ],
            "worker": [
                *(py, "-m", "celery", "-A", "app.celery_utils", "worker", "--loglevel=INFO"),
                *(f"--concurrency={worker_concurrency}", "--without-gossip", "--without-mingle"),
            ],
            "beat": [
                *(py, "-m", "celery", "-A", "app.celery_utils", "beat"),
                *("-S", "redbeat.RedBeatScheduler", "--loglevel=INFO"),
            ],
        }
        self.procs: dict[str, subprocess.Popen] = {}
        self.starts: dict[str, int] = {}

    # -- processes -------------------------------------------------------------

    def log_path(self, name: str) -> Path:
        return self.logs / f"{name}.log"

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

    def start(self, name: str) -> subprocess.Popen:
        self.starts[name] = self.starts.get(name, 0) + 1
        with open(self.log_path(name), "ab") as f:
            f.write(f"\n==== start #{self.starts[name]} at {time.time():.3f}\n".encode())
            f.flush()
            proc = subprocess.Popen(
                self.commands[name],
                env=self.env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        self.procs[name] = proc
        return proc

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal the process group of ``name`` (the leader and, e.g., its pool children)."""
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def stop(self, name: str, timeout: float = STOP_TIMEOUT_S) -> bool:
        """SIGTERM, then SIGKILL after ``timeout``; True when it stopped on SIGTERM."""
        proc = self.procs.get(name)
        if proc is None:
            return True
        graceful = True
        if proc.poll() is None:
            self.kill(name, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                graceful = False
        self.kill(name, signal.SIGKILL)  # leftovers of the group, if any
        proc.wait()
        return graceful

    def stop_all(self) -> None:
        for name in ("web", "beat", "worker"):
            self.stop(name)

    def dead(self) -> dict[str, int]:
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        last = "no answer"
        while time.monotonic() < deadline:
            if "web" in self.dead():
                break
            try:
                resp = http().get(f"{self.base_url}/healthz", timeout=2)
                if resp.status_code == 200:
                    return
                last = f"HTTP {resp.status_code}: {resp.text[:200]}"
            except requests.RequestException as exc:
                last = str(exc)
            time.sleep(0.3)
        raise RuntimeError(f"web not ready: {last}\n{tail(self.log_path('web'))}")

    # -- admin API -------------------------------------------------------------

    def admin(self, method: str, path: str, timeout: float = 30.0) -> dict:
        resp = http().request(
            method,
            f"{self.base_url}/api/admin/counters/{path}",
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=timeout,
        )
        resp.raise_for_status()
        return resp.json()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
