"""``python -m loadtests run --users N --duration 40s [--chaos] [--redis-rollback]``: see
``loadtests/README.md``."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from .runner import Options, run

_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def duration(text: str) -> float:
    """``40s``, ``2m``, ``1m30s`` or plain seconds -> seconds."""
    m = _DURATION.match(text.strip())
    if not m or not any(m.groups()):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 40s, 2m, 1m30s)")
    h, mins, s = m.groups()
    return int(h or 0) * 3600 + int(mins or 0) * 60 + float(s or 0)


def wait_range(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition(",")
    try:
        pair = (float(lo), float(hi or lo))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not MIN,MAX seconds: {text!r}") from None
    if pair[0] < 0 or pair[1] < pair[0]:
        raise argparse.ArgumentTypeError(f"not MIN,MAX seconds: {text!r}")
    return pair


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m loadtests")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="one load test: start the stack, load it, verify the counters")
    r.add_argument("--users", type=int, required=True, help="concurrent Locust users")
    r.add_argument("--duration", type=duration, required=True, help="load time, e.g. 40s")
    r.add_argument(
        "--chaos", action="store_true", help="SIGKILL the worker several times, restart beat"
    )
    r.add_argument(
        "--redis-rollback",
        action="store_true",
        help="counter buffer on a Redis of its own, SIGKILLed and restarted from its dump",
    )
    r.add_argument(
        "--visitors",
        action="store_true",
        help="views under the view policy (COUNTERS_VIEW_POLICY=dedupe): vid cookies with "
        "repeats, crawlers; checked against the distinct visitors (default: raw)",
    )
    r.add_argument("--spawn-rate", type=float, help="users started per second (default N/5)")
    r.add_argument("--processes", type=int, default=1, help="Locust processes (default 1)")
    r.add_argument("--web-workers", type=int, default=3, help="gunicorn workers (default 3)")
    r.add_argument("--web-threads", type=int, default=4, help="threads per gunicorn worker")
    r.add_argument("--worker-concurrency", type=int, default=1, help="Celery pool size")
    r.add_argument("--flush-interval", type=float, default=1.0, help="COUNTERS_FLUSH_INTERVAL, s")
    r.add_argument("--posts", type=int, default=200, help="posts to seed (default 200)")
    r.add_argument("--articles", type=int, default=80, help="articles to seed (default 80)")
    r.add_argument(
        "--wait",
        type=wait_range,
        default=(0.5, 2.0),
        help="MIN,MAX seconds each user waits between tasks (default 0.5,2)",
    )
    r.add_argument("--out", type=Path, help="output folder (default loadtests/out/run-<time>)")
    r.add_argument("--chaos-seed", type=int, help="seed of the fault plan's randomness")
    r.add_argument(
        "--reconcile-every",
        type=float,
        default=0.0,
        metavar="S",
        help="also run the admin reconcile every S seconds during the load (default off)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.users < 1 or args.duration <= 0:
        parser().error("--users and --duration must be positive")
    return run(
        Options(
            users=args.users,
            duration_s=args.duration,
            chaos=args.chaos,
            spawn_rate=args.spawn_rate,
            processes=args.processes,
            web_workers=args.web_workers,
            web_threads=args.web_threads,
            worker_concurrency=args.worker_concurrency,
            flush_interval_s=args.flush_interval,
            posts=args.posts,
            articles=args.articles,
            wait_s=args.wait,
            out=args.out,
            chaos_seed=args.chaos_seed,
            reconcile_every_s=args.reconcile_every,
            redis_rollback=args.redis_rollback,
            visitors=args.visitors,
        )
    )


if __name__ == "__main__":
    sys.exit(main())
