"""Poll ``GET /api/admin/counters/stats`` during the run to see how far the flush lags,
and the machine's CPU use, to tell a slow engine from a saturated machine."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import requests

from .stack import http

POLL_INTERVAL_S = 0.5


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat (Linux only)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


class LagMonitor(threading.Thread):
    """Records ``pending`` and ``oldest_pending_age_s`` samples to ``stats.jsonl``."""

    def __init__(self, base_url: str, admin_token: str, out: Path) -> None:
        super().__init__(name="lag-monitor", daemon=True)
        self.url = f"{base_url}/api/admin/counters/stats"
        self.headers = {"Authorization": f"Bearer {admin_token}"}
        self.path = out / "stats.jsonl"
        self.started = time.monotonic()
        self.halt = threading.Event()
        self.max_lag_s = 0.0
        self.max_lag_at_s: float | None = None
        self.max_pending = 0
        self.samples = 0
        self.errors = 0
        self.last: dict = {}
        self.cpu_samples: list[float] = []
        self._cpu_prev = _cpu_times()

    def sample(self) -> dict | None:
        try:
            resp = http().get(self.url, headers=self.headers, timeout=5)
            resp.raise_for_status()
            return resp.json()
        except (requests.RequestException, ValueError):
            self.errors += 1
            return None

    def run(self) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            while not self.halt.wait(POLL_INTERVAL_S):
                self._sample_cpu()
                stats = self.sample()
                if stats is None:
                    continue
                t = time.monotonic() - self.started
                self.samples += 1
                self.last = stats
                lag = float(stats.get("oldest_pending_age_s") or 0.0)
                if lag > self.max_lag_s:
                    self.max_lag_s, self.max_lag_at_s = lag, t
                self.max_pending = max(self.max_pending, int(stats.get("pending") or 0))
                f.write(json.dumps({"t": round(t, 3), **stats}) + "\n")

    def _sample_cpu(self) -> None:
        now = _cpu_times()
        if now is not None and self._cpu_prev is not None:
            busy, total = now[0] - self._cpu_prev[0], now[1] - self._cpu_prev[1]
            if total > 0:
                self.cpu_samples.append(100.0 * busy / total)
        self._cpu_prev = now

    @property
    def cpu_mean(self) -> float:
        return sum(self.cpu_samples) / len(self.cpu_samples) if self.cpu_samples else 0.0

    @property
    def cpu_max(self) -> float:
        return max(self.cpu_samples, default=0.0)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)


class PeriodicReconcile(threading.Thread):
    """``POST /api/admin/counters/reconcile`` every ``every_s`` during the load (G4).

    In a run without lost answers the counters never drift, so any fix it reports
    is a finding: either real drift or a recount that miscounted pending deltas.
    """

    def __init__(self, admin, every_s: float) -> None:
        super().__init__(name="reconcile", daemon=True)
        self.admin = admin
        self.every_s = every_s
        self.halt = threading.Event()
        self.runs = 0
        self.checked = 0
        self.fixes: list[dict] = []
        self.errors: list[str] = []

    def run(self) -> None:
        while not self.halt.wait(self.every_s):
            try:
                result = self.admin("POST", "reconcile", timeout=120)
            except (requests.RequestException, ValueError) as exc:
                self.errors.append(str(exc))
                continue
            self.runs += 1
            self.checked += int(result.get("checked") or 0)
            self.fixes.extend(result.get("fixes") or [])

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=130)
