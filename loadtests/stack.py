"""The system under test: migrations, and the web, worker and beat processes.

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
from pathlib import Path

import requests

from .servers import Servers

ROOT = Path(__file__).resolve().parent.parent
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
