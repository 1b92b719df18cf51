"""The contract's three processes on 127.0.0.1, with one environment: web (gunicorn),
worker (Celery) and beat (RedBeat). The load tests, the HTTP benchmark and ``make run``
run them through :class:`Stack`; each caller gives the options of its own command lines.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from harness import ROOT
from harness.processes import (
    READY_TIMEOUT_S,
    STOP_TIMEOUT_S,
    NotReady,
    signal_group,
    spawn,
    stop_all,
    tail,
    wait_http,
)

WEB_APP = "app:create_app()"
CELERY_APP = "app.celery_utils"


def web_command(port: int, *options: str, app: str = WEB_APP) -> list[str]:
    """gunicorn serving ``app`` on 127.0.0.1:``port``, run with this interpreter."""
    return [sys.executable, "-m", "gunicorn", app, "--bind", f"127.0.0.1:{port}", *options]


def worker_command(*options: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", CELERY_APP, "worker", *options]


def beat_command(*options: str) -> list[str]:
    return [
        *(sys.executable, "-m", "celery", "-A", CELERY_APP, "beat"),
        *("-S", "redbeat.RedBeatScheduler", *options),
    ]


class Stack:
    """web, worker and (unless ``beat`` is None) beat, each started with :func:`spawn`.

    Output goes to ``logs/<name>.log`` (appended, one header line per start), or, with
    ``echo``, line by line to ``echo(name, line)`` from a reader thread per process.
    """

    def __init__(
        self,
        env: dict[str, str],
        *,
        port: int,
        web: list[str],
        worker: list[str],
        beat: list[str] | None,
        app: str = WEB_APP,
        logs: Path | None = None,
        echo: Callable[[str, str], None] | None = None,
        cwd: Path = ROOT,
    ) -> None:
        if (logs is None) == (echo is None):
            raise ValueError("give either logs or echo")
        self.env = env
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.commands = {"web": web_command(port, *web, app=app), "worker": worker_command(*worker)}
        if beat is not None:
            self.commands["beat"] = beat_command(*beat)
        self.logs = logs
        self.echo = echo
        self.cwd = cwd
        self.procs: dict[str, subprocess.Popen] = {}
        self.starts: dict[str, int] = {}
        self._readers: list[threading.Thread] = []
        if logs is not None:
            logs.mkdir(parents=True, exist_ok=True)

    def log_path(self, name: str) -> Path:
        if self.logs is None:
            raise ValueError("this stack echoes its output: no log files")
        return self.logs / f"{name}.log"

    def _spawn(self, name: str) -> subprocess.Popen:
        self.starts[name] = self.starts.get(name, 0) + 1
        if self.logs is None:
            output: Path | int = subprocess.PIPE
        else:
            output = self.log_path(name)
            with open(output, "ab") as f:
                f.write(f"\n==== start #{self.starts[name]} at {time.time():.3f}\n".encode())
        proc = spawn(self.commands[name], env=self.env, cwd=self.cwd, output=output)
        self.procs[name] = proc
        return proc

    def _read(self, name: str, proc: subprocess.Popen) -> None:
        if self.echo is None:
            return
        thread = threading.Thread(target=self._pump, args=(name, proc), daemon=True)
        thread.start()
        self._readers.append(thread)

    def _pump(self, name: str, proc: subprocess.Popen) -> None:
        for raw in proc.stdout:
            self.echo(name, raw.decode(errors="replace").rstrip("\n"))

    def start(self, name: str) -> subprocess.Popen:
        """Start (or restart) one process."""
        proc = self._spawn(name)
        self._read(name, proc)
        return proc

    def start_all(self) -> None:
        # Reader threads only after every fork: preexec_fn runs Python code in the
        # child, where a lock another thread held at fork time would stay held.
        for name in self.commands:
            self._spawn(name)
        for name in self.commands:
            self._read(name, self.procs[name])

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal the process group of ``name`` (the leader and, e.g., its pool children)."""
        signal_group(self.procs[name], sig)

    def stop(self, name: str, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """SIGTERM, then SIGKILL after ``timeout_s``; True when it stopped on SIGTERM."""
        proc = self.procs.get(name)
        return proc is None or not stop_all([proc], timeout_s)

    def stop_all(
        self, timeout_s: float = STOP_TIMEOUT_S, cancel: threading.Event | None = None
    ) -> list[str]:
        """Stop every process together; returns the names that needed SIGKILL."""
        stubborn = stop_all(self.procs.values(), timeout_s, cancel)
        for thread in self._readers:
            thread.join(timeout=2)
        return [name for name, proc in self.procs.items() if proc in stubborn]

    def dead(self) -> dict[str, int]:
        return {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}

    def wait_ready(
        self, timeout_s: float = READY_TIMEOUT_S, cancel: threading.Event | None = None
    ) -> None:
        """Until ``/healthz`` answers 2xx; :class:`NotReady` if a process exits first."""
        try:
            wait_http(
                f"{self.base_url}/healthz",
                timeout_s=timeout_s,
                procs=self.procs.values(),
                cancel=cancel,
            )
        except NotReady as exc:
            if self.logs is None:
                raise
            raise NotReady(f"{exc}\n{tail(self.log_path('web'))}") from None
