"""Processes a test starts (workers, beats, web servers), built on ``harness.processes``:
each logs to a file under the test's tmp_path and is stopped at the end (SIGTERM, then
SIGKILL); ``wait_for`` polls a condition and fails with those logs."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from harness.processes import spawn, stop_all

STOP_WAIT_S = 20


def log_text(log: Path) -> str:
    return log.read_text(errors="replace") if log.exists() else ""


def wait_for(what: str, check, timeout_s: float, logs: list[Path] = ()):
    """``check()``'s first truthy result within ``timeout_s``, else fail with the logs."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {p.name} ---\n{log_text(p)[-2500:]}" for p in logs)
            pytest.fail(f"not within {timeout_s} s: {what}\n{tails}")
        time.sleep(0.1)


class Processes:
    """Worker and beat processes started by one test (``harness.processes``), with their
    output in a log file; all stopped at the end (SIGTERM, then SIGKILL)."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, cmd: list[str], env: dict) -> tuple[subprocess.Popen, Path]:
        log = self.tmp_path / f"{name}.log"
        proc = spawn(cmd, cwd=self.tmp_path, env=env, output=log)
        self.procs.append(proc)
        return proc, log

    @staticmethod
    def stop(proc: subprocess.Popen) -> None:
        stop_all([proc], STOP_WAIT_S)  # warm shutdown: running tasks finish

    def stop_all(self) -> None:
        stop_all(self.procs, STOP_WAIT_S)
