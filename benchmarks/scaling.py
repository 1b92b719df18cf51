"""Flush scaling: counters applied per second by the fan-out flush with 1, 2 and 4
Celery worker processes.

    python -m benchmarks.scaling                     # 100k counters, 64 shards, 1/2/4 workers
    python -m benchmarks.scaling --workers 1,2 --counters 20000 --reps 1   # quicker
    python -m benchmarks.scaling --json /tmp/scaling.json

For each worker count N it starts N ``celery -A app.celery_utils worker --pool=solo``
processes (one flushing process each, like ``docker compose up --scale worker=N``),
then ``reps`` times: vacuums the table, puts ``--counters`` dirty counters in Redis (two
per post, one delta each, over ``--shards`` shards), sends one ``counters.flush`` and
times it until no shard is dirty (polled every 10 ms). That is the whole fan-out: the
task finds the dirty shards, sends one ``counters.flush_shards`` task per ``--group-size``
shards, and the workers apply them. Postgres is checked to hold every delta after each
round. The in-process ``Counters.flush_all()`` (the synchronous admin/CLI path, one
process, no Celery) runs on the same data as a baseline. Medians of the reps are shown.

Servers: Postgres and Redis on 127.0.0.1 only (``BENCH_DATABASE_URL`` /
``BENCH_REDIS_URL``, else ``DATABASE_URL`` / ``REDIS_URL``, else the local defaults).
The run creates a database ``ctrscale_<random>`` and drops it at the end. In Redis it
uses db ``SCALING_REDIS_DB`` (default 7) and never flushes it: its own keys (counter
prefix, queue and task results named after the run) are deleted at the end; Celery's
shared ``_kombu.*`` bookkeeping of that db is left as the workers leave it.
Every wait is bounded; the worker processes are stopped at the end, also on errors.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import redis
import sqlalchemy as sa

from app.counters import counters
from app.extensions import db
from harness import ROOT
from harness.processes import spawn, stop_all
from harness.scratch import ScratchDatabase
from harness.servers import DEFAULT_PG, DEFAULT_REDIS, from_env
from harness.stack import worker_command
from harness.urls import require_loopback, with_database, with_redis_db

DEFAULT_REDIS_DB = 7  # no test, benchmark or load test of the project uses it
COUNTERS_PER_POST = 2  # posts.view_count and posts.likes_count
SEED_CHUNK = 5_000  # increments per pipelined round trip
POLL_S = 0.01
READY_TIMEOUT_S = 60.0
DRAIN_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 20.0
FLUSH_INTERVAL_S = 600.0  # the flush_shards expiry: longer than any drain here


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.scaling", description=__doc__.split("\n")[0]
    )
    p.add_argument("--workers", default="1,2,4", help="worker process counts (1,2,4)")
    p.add_argument("--counters", type=int, default=100_000, help="dirty counters per round")
    p.add_argument("--shards", type=int, default=64, help="COUNTERS_SHARDS (64)")
    p.add_argument("--group-size", type=int, default=4, help="COUNTERS_FLUSH_GROUP_SIZE (4)")
    p.add_argument("--reps", type=int, default=3, help="rounds per worker count (3)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    args.workers = [int(n) for n in args.workers.split(",")]
    if min(args.workers) < 1 or args.counters < COUNTERS_PER_POST or args.reps < 1:
        p.error("--workers, --counters and --reps must be positive")
    return args


class Run:
    """One benchmark run's names, servers and worker processes."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.id = uuid.uuid4().hex[:8]
        self.prefix = f"scale{self.id}"
        self.queue = f"scaling-{self.id}"
        self.admin_pg = require_loopback(
            from_env("BENCH_DATABASE_URL", "DATABASE_URL", default=DEFAULT_PG)
        )
        redis_base = require_loopback(
            from_env("BENCH_REDIS_URL", "REDIS_URL", default=DEFAULT_REDIS)
        )
        db = int(os.environ.get("SCALING_REDIS_DB", DEFAULT_REDIS_DB))
        self.redis_url = with_redis_db(redis_base, db)
        self.db_name = f"ctrscale_{self.id}"
        self.database_url = with_database(self.admin_pg, self.db_name)
        self.scratch: ScratchDatabase | None = None
        self.logs = Path(tempfile.mkdtemp(prefix="ctrscale-"))
        self.procs: list[subprocess.Popen] = []
        self.task_ids: list[str] = []
        self.app = None

    def config(self) -> dict:
        return {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "COUNTERS_SCOPE": self.prefix,
            "COUNTERS_SHARDS": self.args.shards,
            "COUNTERS_FLUSH_GROUP_SIZE": self.args.group_size,
            "COUNTERS_FLUSH_INTERVAL": FLUSH_INTERVAL_S,
            "CELERY_TASK_DEFAULT_QUEUE": self.queue,
        }

    # -- servers ---------------------------------------------------------------

    def __enter__(self) -> Run:
        self.scratch = ScratchDatabase(self.admin_pg, self.db_name)
        try:
            import flask_migrate

            from app import create_app

            self.app = create_app(self.config())
            with self.app.app_context():
                flask_migrate.upgrade()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop_workers()
        if self.app is not None:
            with self.app.app_context():
                db.engine.dispose()
            counters.get(self.app).close()
        self._clean_redis()
        self.scratch.drop()

    def _clean_redis(self) -> None:
        r = redis.Redis.from_url(self.redis_url)
        try:
            keys = [
                *r.scan_iter(match=f"{{{self.prefix}*", count=1000),
                *r.scan_iter(match=f"*{self.queue}*", count=1000),
                *(f"celery-task-meta-{t}" for t in self.task_ids),
            ]
            for i in range(0, len(keys), 1000):
                r.delete(*keys[i : i + 1000])
        finally:
            r.close()

    # -- workers ---------------------------------------------------------------

    def start_workers(self, n: int) -> None:
        env = {
            **os.environ,
            "FLASK_SKIP_DOTENV": "1",
            "PYTHONPATH": str(ROOT),
            **{k: str(v) for k, v in self.config().items()},
        }
        for key in ("COUNTERS_REDIS_URL", "COUNTERS_REDIS_CLUSTER"):
            env.pop(key, None)
        logs = []
        for i in range(n):
            log = self.logs / f"worker-{n}-{i}.log"
            cmd = worker_command(
                *("--pool=solo", "-Q", self.queue, "-n", f"scale{i}-{self.id}@%h"),
                *("--loglevel=info", "--without-mingle", "--without-gossip"),
                "--without-heartbeat",
            )
            self.procs.append(spawn(cmd, cwd=self.logs, env=env, output=log))
            logs.append(log)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not all(" ready." in log.read_text(errors="replace") for log in logs):
            dead = [p for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"workers did not start: see {self.logs}")
            time.sleep(0.1)

    def stop_workers(self) -> None:
        stop_all(self.procs, STOP_TIMEOUT_S)
        self.procs = []

    # -- one round ---------------------------------------------------------------

    @contextmanager
    def context(self):
        with self.app.app_context():
            yield counters.get(self.app)

    def seed_rows(self) -> list[int]:
        posts = self.args.counters // COUNTERS_PER_POST
        with self.context() as counters:
            with db.engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "INSERT INTO users (id, username, token_hash) VALUES (1, 'scaler', 'x')"
                    )
                )
                conn.execute(
                    sa.text(
                        "INSERT INTO posts (id, title, content, author_id) "
                        "SELECT g, 'post ' || g, '', 1 FROM generate_series(1, :n) g"
                    ),
                    {"n": posts},
                )
            for table in ("posts", "articles"):
                counters.rebuild_index(table)
        return list(range(1, posts + 1))

    def seed_deltas(self, posts: list[int]) -> int:
        """One delta on each counter; returns the counters now dirty. The table is
        vacuumed first, so no round pays for the dead rows of the one before."""
        with self.context() as counters:
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("VACUUM (ANALYZE) posts"))
            items = [
                (name, p, 1) for p in posts for name in ("posts.view_count", "posts.likes_count")
            ]
            for i in range(0, len(items), SEED_CHUNK):
                counters.incr_many(items[i : i + SEED_CHUNK])
            backlog = counters.backlog()
        return sum(s["pending"] + s["inflight"] for s in backlog)

    def applied(self) -> int:
        with self.context(), db.engine.connect() as conn:
            q = "SELECT coalesce(sum(view_count + likes_count), 0)::bigint FROM posts"
            return int(conn.execute(sa.text(q)).scalar_one())

    def fan_out_round(self) -> dict:
        celery = self.app.extensions["celery"]
        with self.context() as counters:
            started = time.perf_counter()
            parent = celery.send_task("counters.flush")
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while counters.dirty_shards():
                if time.monotonic() > deadline:
                    raise RuntimeError(f"not drained within {DRAIN_TIMEOUT_S} s: see {self.logs}")
                time.sleep(POLL_S)
            drained_s = time.perf_counter() - started
        self.task_ids.append(parent.id)
        sent = parent.get(timeout=DRAIN_TIMEOUT_S)
        per_worker: dict[str, int] = {}
        for d in sent.get("dispatched", []):
            self.task_ids.append(d["id"])
            result = celery.AsyncResult(d["id"]).get(timeout=DRAIN_TIMEOUT_S)
            if result["errors"]:
                raise RuntimeError(f"flush_shards failed: {result['errors']}")
            per_worker[result["worker"]] = per_worker.get(result["worker"], 0) + result["flushed"]
        return {
            "seconds": drained_s,
            "tasks": len(sent.get("dispatched", [])),
            "per_worker": sorted(per_worker.values(), reverse=True),
        }

    def flush_all_round(self) -> dict:
        with self.context() as counters:
            started = time.perf_counter()
            counters.flush_all()
            return {"seconds": time.perf_counter() - started}


def measure(run: Run, label: str, rounds, posts: list[int], expected: int) -> tuple[dict, int]:
    reps = []
    for rep in range(run.args.reps):
        dirty = run.seed_deltas(posts)
        if dirty != run.args.counters // COUNTERS_PER_POST * COUNTERS_PER_POST:
            raise RuntimeError(f"{dirty} dirty counters after seeding")
        outcome = rounds()
        expected += dirty
        if run.applied() != expected:
            raise RuntimeError(f"Postgres holds {run.applied()} deltas, expected {expected}")
        outcome["counters_per_s"] = dirty / outcome["seconds"]
        reps.append(outcome)
        print(
            f"  {label}, round {rep + 1}: {dirty:,} counters in {outcome['seconds']:.2f} s"
            f" = {outcome['counters_per_s']:,.0f}/s"
            + (f", per worker {outcome['per_worker']}" if "per_worker" in outcome else ""),
            file=sys.stderr,
            flush=True,
        )
    rates = [r["counters_per_s"] for r in reps]
    row = {
        "label": label,
        "counters": dirty,
        "median_s": round(statistics.median(r["seconds"] for r in reps), 3),
        "median_counters_per_s": round(statistics.median(rates)),
        "min_counters_per_s": round(min(rates)),
        "max_counters_per_s": round(max(rates)),
        "reps": reps,
    }
    return row, expected


def machine(run: Run) -> dict:
    r = redis.Redis.from_url(run.redis_url)
    try:
        redis_version = r.info("server").get("redis_version")
    finally:
        r.close()
    with run.context(), db.engine.connect() as conn:
        pg_version = conn.execute(sa.text("SHOW server_version")).scalar_one()
    return {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "redis": redis_version,
        "postgres": pg_version,
    }


def markdown(results: dict) -> str:
    s = results["settings"]
    lines = [
        f"{s['counters']:,} dirty counters over {s['shards']} shards, "
        f"{s['group_size']} shards per flush_shards task, median of {s['reps']} rounds; "
        f"{results['machine']['cores']} cores, Postgres {results['machine']['postgres']}, "
        f"Redis {results['machine']['redis']}.",
        "",
        "| flushing | drain time (s) | counters/s (median) | min–max | × 1 worker |",
        "|---|---|---|---|---|",
    ]
    base = next((r for r in results["rows"] if r["label"] == "1 worker"), None)
    for row in results["rows"]:
        ratio = (
            f"{row['median_counters_per_s'] / base['median_counters_per_s']:.2f}"
            if base is not None
            else "–"
        )
        lines.append(
            f"| {row['label']} | {row['median_s']:.2f} | {row['median_counters_per_s']:,} | "
            f"{row['min_counters_per_s']:,}–{row['max_counters_per_s']:,} | {ratio} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    with Run(args) as run:
        posts = run.seed_rows()
        expected, rows = 0, []
        row, expected = measure(
            run, "flush_all(), in-process", run.flush_all_round, posts, expected
        )
        rows.append(row)
        for n in args.workers:
            run.start_workers(n)
            try:
                label = f"{n} worker" + ("s" if n > 1 else "")
                row, expected = measure(run, label, run.fan_out_round, posts, expected)
                rows.append(row)
            finally:
                run.stop_workers()
        results = {
            "settings": {
                "counters": len(posts) * COUNTERS_PER_POST,
                "shards": args.shards,
                "group_size": args.group_size,
                "reps": args.reps,
                "pool": "solo (one flushing process per worker)",
            },
            "machine": machine(run),
            "rows": rows,
        }
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
