"""Faults injected while the load runs: SIGKILL the Celery worker (and its pool) several
times, each time restarting it, and restart beat once.

Half of the worker kills wait for the worker to log a received task first, so they
tend to land inside a flush (claimed, mid-transaction or just committed) rather than
between two. The plan runs from the main thread (see ``stack``: children must be
forked by the main thread).
"""

from __future__ import annotations

import random
import signal
import time
from dataclasses import dataclass

from .stack import Stack

FIRST_AT = 0.15  # of the duration: let the load ramp up first
LAST_AT = 0.8  # leave time for a few scheduled flushes after the last fault
DOWNTIME_S = (0.5, 2.5)  # how long the worker stays dead
TASK_WAIT_S = 3.0  # longest wait for a task to start before a timed kill
BEAT_STOP_TIMEOUT_S = 10.0


@dataclass
class Fault:
    at_s: float
    kind: str  # "kill-worker" | "kill-worker-in-task" | "restart-beat"


def plan(duration_s: float, rng: random.Random) -> list[Fault]:
    kills = max(3, round(duration_s / 12))
    span = (LAST_AT - FIRST_AT) * duration_s
    faults = []
    for i in range(kills):
        at = FIRST_AT * duration_s + span * (i + rng.uniform(0.1, 0.6)) / kills
        faults.append(Fault(at, "kill-worker-in-task" if i % 2 == 0 else "kill-worker"))
    faults.append(Fault(duration_s * 0.5 + rng.uniform(-1, 1), "restart-beat"))
    return sorted(faults, key=lambda f: f.at_s)


class Chaos:
    def __init__(self, stack: Stack, duration_s: float, seed: int | None = None) -> None:
        self.stack = stack
        self.rng = random.Random(seed)
        self.faults = plan(duration_s, self.rng)
        self.log: list[str] = []
        self.started = time.monotonic()
        self.restart_s: list[float] = []  # worker restart -> "ready." in its log
        self._booting: tuple[int, float] | None = None  # (log offset, restart time)

    def _note(self, text: str) -> None:
        self.log.append(f"t={time.monotonic() - self.started:5.1f}s  {text}")

    def step(self) -> None:
        """Inject every fault that is due now."""
        self._check_ready()
        now = time.monotonic() - self.started
        while self.faults and self.faults[0].at_s <= now:
            fault = self.faults.pop(0)
            if fault.kind == "restart-beat":
                self._restart_beat()
            else:
                self._kill_worker(in_task=fault.kind == "kill-worker-in-task")

    def pending(self) -> int:
        return len(self.faults)

    def _wait_for_task(self) -> bool:
        path = self.stack.log_path("worker")
        offset = path.stat().st_size
        deadline = time.monotonic() + TASK_WAIT_S
        while time.monotonic() < deadline:
            with open(path, "rb") as f:
                f.seek(offset)
                if b"received" in f.read():
                    return True
            time.sleep(0.005)
        return False

    def _kill_worker(self, in_task: bool) -> None:
        self._check_ready()
        proc = self.stack.procs["worker"]
        if self._booting is not None:
            self._note("(the worker is killed before it logged ready)")
            self._booting = None
        how = "between tasks"
        if in_task:
            how = "right after a task was received" if self._wait_for_task() else "no task seen"
            time.sleep(self.rng.uniform(0.0, 0.03))
        self.stack.kill("worker", signal.SIGKILL)
        proc.wait()
        down = self.rng.uniform(*DOWNTIME_S)
        self._note(f"SIGKILL worker pid {proc.pid} and its pool ({how}); down {down:.1f}s")
        time.sleep(down)
        offset = self.stack.log_path("worker").stat().st_size
        new = self.stack.start("worker")
        self._booting = (offset, time.monotonic())
        self._note(f"worker restarted, pid {new.pid}")

    def _check_ready(self) -> None:
        if self._booting is None:
            return
        offset, since = self._booting
        with open(self.stack.log_path("worker"), "rb") as f:
            f.seek(offset)
            ready = b" ready." in f.read()
        if ready:
            self.restart_s.append(time.monotonic() - since)
            self._note(f"worker ready {self.restart_s[-1]:.1f}s after its restart")
            self._booting = None

    def _restart_beat(self) -> None:
        proc = self.stack.procs["beat"]
        graceful = self.stack.stop("beat", timeout_s=BEAT_STOP_TIMEOUT_S)
        how = "SIGTERM" if graceful else "SIGTERM, then SIGKILL"
        self._note(f"beat pid {proc.pid} stopped ({how})")
        new = self.stack.start("beat")
        self._note(f"beat restarted, pid {new.pid}")
