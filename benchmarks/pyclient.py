"""The fallback load generator: keep-alive HTTP/1.1 over raw asyncio streams, one request
in flight per connection, bounded by a duration and a request count. Prints one JSON
line with the same fields as the wrk driver.

    python -m benchmarks.pyclient CONFIG.json

where the file holds ``{"host", "port", "method", "paths": [...], "connections",
"duration_s", "max_requests"}``.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time


async def worker(cfg, deadline, latencies, counts, rng) -> None:
    reader, writer = await asyncio.open_connection(cfg["host"], cfg["port"])
    head = f"Host: {cfg['host']}:{cfg['port']}\r\nContent-Length: 0\r\n\r\n"
    requests = [f"{cfg['method']} {p} HTTP/1.1\r\n{head}".encode() for p in cfg["paths"]]
    single = requests[0] if len(requests) == 1 else None
    try:
        while time.perf_counter() < deadline and counts["sent"] < cfg["max_requests"]:
            counts["sent"] += 1
            t0 = time.perf_counter_ns()
            writer.write(single or rng.choice(requests))
            header = await reader.readuntil(b"\r\n\r\n")
            status = int(header[9:12])
            length = 0
            for line in header.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            latencies.append(time.perf_counter_ns() - t0)
            if status >= 400:
                counts["status"] += 1
    except (OSError, asyncio.IncompleteReadError):
        counts["read"] += 1
    finally:
        writer.close()


async def main(cfg) -> dict:
    latencies: list[int] = []
    counts = {"sent": 0, "status": 0, "read": 0}
    rng = random.Random(cfg.get("seed", 1))
    started = time.perf_counter()
    deadline = started + cfg["duration_s"]
    await asyncio.gather(
        *(worker(cfg, deadline, latencies, counts, rng) for _ in range(cfg["connections"]))
    )
    took = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] / 1000

    return {
        "requests": len(latencies),
        "duration_us": int(took * 1e6),
        "errors": {"connect": 0, "read": counts["read"], "write": 0, "timeout": 0},
        "non2xx3xx": counts["status"],
        "latency_us": {
            "p50": pct(50),
            "p90": pct(90),
            "p99": pct(99),
            "p999": pct(99.9),
            "mean": sum(latencies) / max(1, len(latencies)) / 1000,
            "max": latencies[-1] / 1000 if latencies else 0,
        },
    }


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        config = json.load(f)
    print("JSON" + json.dumps(asyncio.run(main(config))))
