"""Load generators behind one call: ``wrk`` (C, epoll, keep-alive) when it is installed,
else the asyncio client in ``benchmarks/pyclient.py``. Both run as a child process, so
their CPU time is measured apart from the server's (``wait4`` rusage).

Each run is bounded: ``duration_s`` (wrk's ``-d``; the Python client also stops at
``max_requests``), and a watchdog kills a child that overruns by 30 s.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass, field

WATCHDOG_S = 30.0
WRK_THREADS = 1  # one event loop thread: it leaves the most CPU to the server


@dataclass
class LoadResult:
    tool: str
    connections: int
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    errors: dict = field(default_factory=dict)
    non_2xx: int = 0
    client_cpu_s: float = 0.0
    machine_cpu_busy: float = 0.0  # share of all cores busy during the run, 0..1

    @property
    def client_cpu_share(self) -> float:
        """Client CPU as a share of the machine's total CPU over the run."""
        return self.client_cpu_s / (self.duration_s * (os.cpu_count() or 1))

    def as_dict(self) -> dict:
        d = asdict(self)
        d["client_cpu_share"] = round(self.client_cpu_share, 3)
        return d


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return sum(parts) - idle, sum(parts)


def wrk_path() -> str | None:
    return shutil.which("wrk")


def _wrk_script(method: str, paths: list[str]) -> str:
    done = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('JSON{"requests":%d,"duration_us":%d,"errors":{"connect":%d,' ..
    '"read":%d,"write":%d,"timeout":%d},"non2xx3xx":%d,"latency_us":{"p50":%d,"p90":%d,' ..
    '"p99":%d,"p999":%d,"mean":%.1f,"max":%d}}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.mean, latency.max))
end
"""
    head = f'wrk.method = "{method}"\nwrk.body = ""\n'
    if len(paths) == 1:
        # no request() function: wrk then sends one pre-built request, the cheapest way
        return head + f'wrk.path = "{paths[0]}"\n' + done
    table = ",".join(f'"{p}"' for p in paths)
    return (
        head
        + f"local paths = {{{table}}}\nlocal n = #paths\n"
        + "init = function(args) math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16)) "
        + "end\n"
        + 'request = function() return wrk.format(nil, paths[math.random(n)], nil, "") end\n'
        + done
    )


def _run_child(argv: list[str], budget_s: float) -> tuple[dict, float]:
    """Run a load generator; returns its JSON line and its CPU seconds (user + sys)."""
    with tempfile.TemporaryFile(mode="w+") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        timer = threading.Timer(budget_s + WATCHDOG_S, os.kill, (proc.pid, signal.SIGKILL))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    lines = [ln for ln in text.splitlines() if ln.startswith("JSON")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{argv[0]} failed ({proc.returncode}): {text[-2000:]}")
    return json.loads(lines[-1][4:]), usage.ru_utime + usage.ru_stime


def run(
    base_url: str,
    method: str,
    paths: list[str],
    *,
    duration_s: float,
    connections: int,
    tool: str = "auto",
    max_requests: int = 2_000_000,
) -> LoadResult:
    """Drive ``paths`` (picked at random per request when several) for ``duration_s``."""
    if tool == "auto":
        tool = "wrk" if wrk_path() else "python"
    busy0, total0 = _cpu_times()
    if tool == "wrk":
        if wrk_path() is None:
            raise RuntimeError("wrk is not installed (apt-get install wrk), use --loadgen python")
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            script.write(_wrk_script(method, paths))
        try:
            argv = [
                wrk_path(),
                f"-t{WRK_THREADS}",
                f"-c{connections}",
                f"-d{max(1, round(duration_s))}s",
                "--timeout",
                "5s",
                "-s",
                script.name,
                base_url,
            ]
            raw, cpu = _run_child(argv, duration_s)
        finally:
            os.unlink(script.name)
    elif tool == "python":
        host, port = base_url.split("//", 1)[1].rstrip("/").split(":")
        cfg = {
            "host": host,
            "port": int(port),
            "method": method,
            "paths": paths,
            "connections": connections,
            "duration_s": duration_s,
            "max_requests": max_requests,
        }
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as conf:
            json.dump(cfg, conf)
        try:
            argv = [sys.executable, "-m", "benchmarks.pyclient", conf.name]
            raw, cpu = _run_child(argv, duration_s)
        finally:
            os.unlink(conf.name)
    else:
        raise ValueError(f"unknown load generator {tool!r}")
    busy1, total1 = _cpu_times()
    took = raw["duration_us"] / 1e6
    lat = raw["latency_us"]
    return LoadResult(
        tool=tool,
        connections=connections,
        requests=raw["requests"],
        duration_s=round(took, 3),
        rps=round(raw["requests"] / took, 1),
        p50_ms=round(lat["p50"] / 1000, 3),
        p90_ms=round(lat["p90"] / 1000, 3),
        p99_ms=round(lat["p99"] / 1000, 3),
        p999_ms=round(lat["p999"] / 1000, 3),
        max_ms=round(lat["max"] / 1000, 3),
        errors={k: v for k, v in raw["errors"].items() if v},
        non_2xx=raw["non2xx3xx"],
        client_cpu_s=round(cpu, 3),
        machine_cpu_busy=round((busy1 - busy0) / max(1, total1 - total0), 3),
    )
