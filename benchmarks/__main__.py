"""``python -m benchmarks``: every benchmark, one results file.

    python -m benchmarks              # full run, a few minutes; writes benchmarks/results/
    python -m benchmarks --quick      # tiny counts, seconds: checks that the harness works
    python -m benchmarks --only flush,memory

See benchmarks/README.md for what each one measures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from harness import ROOT

from . import flush_bench, http_bench, loadgen, memory_bench, policy_bench, report, trending_bench
from .env import BenchEnv
from .progress import Progress

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PARTS = ("http", "flush", "memory", "policy", "trending")
QUICK_FLUSH = {"sizes": (100, 1_000), "reps": 1, "big": (10_000, 100), "big_reps": 1}
QUICK_MEMORY = {"pending": 2_000, "shard_counts": (16, 256), "read_model_rows": 2_000}
QUICK_POLICY = {"sizes": (1_000, 5_000)}
QUICK_TRENDING = {"posts": 2_000, "per_post": 4, "requests": 30, "pending": 200}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny counts (smoke test), no calibration")
    p.add_argument(
        "--only", default=",".join(PARTS), help="comma-separated subset of " + ",".join(PARTS)
    )
    p.add_argument(
        "--out", type=Path, default=RESULTS_DIR, help="directory for latest.{json,md,png}"
    )
    p.add_argument("--duration", type=float, help="seconds per HTTP run (default 4, quick 1)")
    p.add_argument("--rounds", type=int, help="rounds of the fast HTTP variants (default 5)")
    p.add_argument(
        "--variants",
        default="",
        help="comma-separated HTTP variants to run (noop always runs); default: all",
    )
    p.add_argument("--connections", type=int, default=16, help="keep-alive connections (16)")
    p.add_argument(
        "--loadgen",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="auto: wrk when installed, else the built-in Python client",
    )
    p.add_argument(
        "--gunicorn",
        default=http_bench.HttpConfig.gunicorn,
        help="gunicorn options shared by every variant (default: %(default)s)",
    )
    p.add_argument(
        "--sync-gunicorn",
        default=http_bench.HttpConfig.sync_gunicorn,
        help="options of the second gunicorn, with the default (sync) worker class, that "
        "serves noop, write_behind and page too; '' for none (default: %(default)s)",
    )
    p.add_argument("--no-png", action="store_true", help="skip the matplotlib chart")
    return p.parse_args(argv)


def background_cpu_busy(seconds: float = 2.0) -> float:
    """Share of the machine's CPU that other processes use before we start."""
    b0, t0 = loadgen._cpu_times()
    time.sleep(seconds)
    b1, t1 = loadgen._cpu_times()
    return round((b1 - b0) / max(1, t1 - t0), 3)


def main(argv=None) -> int:
    args = parse_args(argv)
    parts = [p for p in args.only.split(",") if p]
    unknown = set(parts) - set(PARTS)
    if unknown:
        sys.exit(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    bad = {v for v in args.variants.split(",") if v} - set(http_bench.VARIANTS)
    if bad:
        sys.exit(f"unknown HTTP variant(s): {', '.join(sorted(bad))}")
    quick = args.quick
    http_cfg = http_bench.HttpConfig(
        duration_s=args.duration or (1.0 if quick else http_bench.HttpConfig.duration_s),
        rounds=args.rounds or (1 if quick else http_bench.HttpConfig.rounds),
        connections=args.connections,
        spread_posts=200 if quick else 10_000,
        loadgen=args.loadgen,
        gunicorn=args.gunicorn,
        sync_gunicorn=args.sync_gunicorn,
        calibrate=not quick,
        warmup_s=0.0 if quick else 1.0,
        drain_timeout_s=60 if quick else 180,
        only=tuple(v for v in args.variants.split(",") if v),
    )
    if "http" in parts and args.loadgen != "python" and loadgen.wrk_path() is None:
        if args.loadgen == "wrk":
            sys.exit("wrk is not installed: apt-get install wrk (or use --loadgen python)")
        print(
            "wrk not found (apt-get install wrk): using the built-in Python load generator, "
            "which costs the server more CPU per request",
            file=sys.stderr,
        )
    steps = 2  # background sample + report
    if "http" in parts:
        steps += http_bench.steps(http_cfg)
    steps += ("flush" in parts) + ("memory" in parts) + ("policy" in parts)
    steps += "trending" in parts
    progress = Progress(steps)
    started = time.monotonic()
    results: dict = {
        "command": "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": quick,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    results["source"] = source_revision()

    def write(final: bool = False) -> None:
        """Results so far, so a failing part never loses the parts that ran."""
        results["duration_s"] = round(time.monotonic() - started, 1)
        results["targets"] = report.targets(results)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.out / "latest.md").write_text(report.markdown(results))
        if final and not args.no_png:
            report.chart(results, args.out / "latest.png")

    def part(name: str, fn) -> None:
        try:
            results[name] = fn()
        except Exception as exc:  # record it, run the other parts, fail at the end
            results.setdefault("errors", {})[name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        write()

    with BenchEnv() as env:
        results.update(env.describe())
        results["redis_db"] = env.redis_db
        with progress.step("machine: CPU used by other processes") as p:
            results["background_cpu_busy"] = background_cpu_busy(0.5 if quick else 2.0)
            results["load_average"] = list(os.getloadavg())
            busy = results["background_cpu_busy"]
            p.result(f"{busy:.0%} busy" + ("  (numbers will be noisy)" if busy > 0.1 else ""))
        if "http" in parts:
            part("http", lambda: http_bench.run(env, http_cfg, progress))
        if "flush" in parts:
            with progress.step("flush: 1k/10k/100k counters vs raw unnest; 1M increments"):
                sizes = QUICK_FLUSH if quick else {}
                part("flush", lambda: flush_bench.run(env, progress=progress, **sizes))
        if "memory" in parts:
            with progress.step("memory: Redis bytes per pending counter and per read model row"):
                sizes = QUICK_MEMORY if quick else {}
                part("memory", lambda: memory_bench.run(env, code="pv", progress=progress, **sizes))
        if "policy" in parts:
            with progress.step("policy: dedupe memory per pair, unique-viewer error"):
                sizes = QUICK_POLICY if quick else {}
                part("policy", lambda: policy_bench.run(env, progress=progress, **sizes))
        if "trending" in parts:
            with progress.step("trending: 100k posts x 14 days of hourly buckets"):
                sizes = QUICK_TRENDING if quick else {}
                part("trending", lambda: trending_bench.run(env, **sizes))
    with progress.step("report: latest.json, latest.md, latest.png") as p:
        write(final=True)
        ok = sum(t["ok"] for t in results["targets"].values())
        p.result(f"{ok}/{len(results['targets'])} targets met; written to {args.out}")
    print(report.markdown(results))
    if results.get("errors"):
        print(f"FAILED parts: {results['errors']}", file=sys.stderr)
        return 1
    return 0


def source_revision() -> dict:
    """The commit measured, and whether engine/ or app/ differ from it."""

    def git(*cmd) -> str | None:
        try:
            out = subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True)
        except OSError:
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    dirty = git("status", "--porcelain", "--", "engine", "app")
    return {"commit": git("rev-parse", "HEAD"), "engine_or_app_modified": bool(dirty)}


if __name__ == "__main__":
    sys.exit(main())
