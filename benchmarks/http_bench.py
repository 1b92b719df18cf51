"""HTTP throughput and latency of every way to count a view, behind one gunicorn, one load
generator, in one run: once on a single hot post, once spread over ``spread_posts`` posts.

Variants (``benchmarks/bench_app.py`` adds the bench-only routes):

* ``noop``            ``POST /bench/posts/<id>/noop``: same 204, counts nothing;
* ``write_behind``    ``POST /api/posts/<id>/view``: the engine's hot path;
* ``page``            ``GET /api/posts/<id>``: counts a view and returns the post;
* ``sql_per_view``    ``POST /bench/posts/<id>/sql``: one synchronous UPDATE per view;
* ``celery_per_view`` ``POST /bench/posts/<id>/celery``: one Celery task per view;
* ``coalesced``       ``POST /bench/posts/<id>/coalesced``: the opt-in coalescing mode
  (``engine/coalesce.py``), views tallied in the process and pushed every 50 ms;
* ``policy``          ``POST /bench/posts/<id>/policy``: the beacon under the view
  policy, every request a new visitor (``write_behind`` counts ``raw``, the site's
  setting for benchmarks).

A Celery worker runs on the same machine for the whole phase, and a ticker in this
process sends ``counters.flush`` every ``COUNTERS_FLUSH_INTERVAL`` seconds, as RedBeat
would. "Persisted views/s" counts the views that reached Postgres, over the load time
plus the time after it until they were all there (final flush, or the Celery queue
drained).
"""

from __future__ import annotations

import os
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from app.counters import counters
from harness.ports import free_port
from harness.processes import spawn, stop, wait_http
from harness.round_trips import counting_round_trips
from harness.stack import Stack, web_command

from . import loadgen
from .cpu import CpuMeter, snapshot

VARIANTS = {
    "noop": ("POST", "/bench/posts/{}/noop"),
    "write_behind": ("POST", "/api/posts/{}/view"),
    "page": ("GET", "/api/posts/{}"),
    "sql_per_view": ("POST", "/bench/posts/{}/sql"),
    "celery_per_view": ("POST", "/bench/posts/{}/celery"),
    "coalesced": ("POST", "/bench/posts/{}/coalesced"),  # opt-in mode, see bench_app.py
    "policy": ("POST", "/bench/posts/{}/policy"),  # the view policy on, see bench_app.py
}
# A run in which one gunicorn worker used less than this share of the workers' CPU is
# repeated (see HttpRun.measure), at most this many times.
UNBALANCED_SHARE = 0.2
UNBALANCED_RETRIES = 2

# repeated every round
FAST = ("noop", "write_behind", "page", "sql_per_view", "coalesced", "policy")
DISTRIBUTIONS = ("hot", "spread")
# The second gunicorn layout (gunicorn's default worker class, sync: one request at a
# time per process, a new connection per request) runs these every round too.
MAIN, SYNC = "gthread", "sync"
SYNC_VARIANTS = ("noop", "write_behind", "page")
FLUSH_INTERVAL_S = 2.0
# gunicorn's own advice for its sync workers, (2 x cores) + 1: one request at a time per
# process, so while one waits on I/O (Redis, Postgres) another has the CPU.
SYNC_WORKERS = 2 * (os.cpu_count() or 1) + 1  # the cores the results record (env.py)
BENCH_APP = "benchmarks.bench_app:create_bench_app()"


@dataclass
class HttpConfig:
    duration_s: float = 4.0
    rounds: int = 5
    connections: int = 16
    spread_posts: int = 10_000
    # the project's web configuration (Procfile.dev): 2 processes x 4 threads (gthread)
    gunicorn: str = "--workers 2 --threads 4"
    # gunicorn's default worker class (sync), SYNC_WORKERS processes; "" runs no second
    # layout
    sync_gunicorn: str = f"--workers {SYNC_WORKERS}"
    celery_concurrency: int = 2
    loadgen: str = "auto"
    calibrate: bool = True
    drain_timeout_s: float = 180.0
    warmup_s: float = 1.0
    # the fast variants to run (noop always runs: every ratio is to it); () = all
    only: tuple[str, ...] = ()

    def gunicorn_args(self, layout: str = MAIN) -> list[str]:
        options = self.gunicorn if layout == MAIN else self.sync_gunicorn
        return [*options.split(), "--log-level", "warning"]

    def layouts(self) -> tuple[str, ...]:
        return (MAIN, SYNC) if self.sync_gunicorn else (MAIN,)

    def variants(self, layout: str) -> tuple[str, ...]:
        chosen = FAST if layout == MAIN else SYNC_VARIANTS
        if self.only:
            chosen = tuple(v for v in chosen if v == "noop" or v in self.only)
        return chosen

    def runs_celery(self) -> bool:
        return not self.only or "celery_per_view" in self.only


class HttpRun:
    """Schema, seed data, gunicorn and a Celery worker (a ``harness.stack.Stack`` without
    beat) and the flush ticker, for one run."""

    def __init__(self, env, cfg: HttpConfig, progress=None) -> None:
        self.env = env
        self.cfg = cfg
        self.progress = progress
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.urls = {MAIN: self.base_url}
        if SYNC in cfg.layouts():
            self.urls[SYNC] = f"http://127.0.0.1:{free_port()}"
        self.stack: Stack | None = None
        self.ticker_stop = threading.Event()
        self.ticks = 0
        self.environ = {
            **os.environ,
            "DATABASE_URL": env.database_url,
            "REDIS_URL": env.redis_url,
            "COUNTERS_REDIS_URL": env.redis_url,
            "COUNTERS_REDIS_CLUSTER": "0",
            "COUNTERS_FLUSH_INTERVAL": str(FLUSH_INTERVAL_S),
            "RATELIMIT_ENABLED": "0",  # the limits are not what is measured
            "COUNTERS_VIEW_POLICY": "raw",  # every view counts; "policy" measures the policy
            "ADMIN_TOKEN": secrets.token_urlsafe(16),
            "PYTHONUNBUFFERED": "1",
        }

    # -- setup -----------------------------------------------------------------

    def build_app(self):
        from .bench_app import create_bench_app

        saved = dict(os.environ)
        os.environ.update(self.environ)  # create_app() reads the environment
        try:
            self.app = create_bench_app()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        self.celery = self.app.extensions["celery"]
        return self.app

    def migrate_and_seed(self) -> list[int]:
        import flask_migrate

        from app.extensions import db

        with self.app.app_context():
            flask_migrate.upgrade()
        client = self.app.test_client()
        user = client.post("/api/users", json={"username": "bench"}).get_json()
        headers = {"Authorization": f"Bearer {user['token']}"}
        first = client.post("/api/posts", json={"title": "hot", "content": "x"}, headers=headers)
        if first.status_code != 201:
            raise RuntimeError(f"could not create a post: {first.get_data(as_text=True)}")
        with self.app.app_context():
            with db.engine.begin() as conn:
                conn.execute(
                    sa.text(
                        "INSERT INTO posts (title, content, author_id) "
                        "SELECT 'post ' || g, repeat('lorem ipsum ', 20), :author "
                        "FROM generate_series(2, :n) g"
                    ),
                    {"author": user["id"], "n": self.cfg.spread_posts},
                )
                ids = [r[0] for r in conn.execute(sa.text("SELECT id FROM posts ORDER BY id"))]
            self.counters().rebuild_index("posts")
        self.hot_id = first.get_json()["id"]
        self.ids = ids
        return ids

    def counters(self):
        return counters.get(self.app)

    def warm_read_model(self, chunk: int = 500) -> dict:
        """Read every post once the way a page does, counting nothing, so that pages
        find their rows in the read model (engine/readmodel.py) as on a site that has
        been up for a while; returns the read model's counters after it."""
        from app.content import PAGE_COLUMNS

        engine = self.counters()
        for i in range(0, len(self.ids), chunk):
            engine.read_rows("posts", self.ids[i : i + chunk], PAGE_COLUMNS)
        return engine.read_model_stats()

    def start(self) -> None:
        self.stack = Stack(
            self.environ,
            port=self.port,
            app=BENCH_APP,
            web=self.cfg.gunicorn_args(MAIN),
            worker=[
                "--include",
                "benchmarks.bench_app",  # the one-task-per-view baseline's task
                *("--pool", "prefork", "--concurrency", str(self.cfg.celery_concurrency)),
                *("--loglevel", "warning", "--without-gossip", "--without-mingle"),
                "--without-heartbeat",
            ],
            beat=None,  # the ticker below sends the flush task instead
            logs=Path(tempfile.mkdtemp(prefix="ctrbench-logs-")),
        )
        if SYNC in self.urls:  # the second layout: another gunicorn of the same app
            port = int(self.urls[SYNC].rsplit(":", 1)[1])
            self.stack.commands["web_" + SYNC] = web_command(
                port, *self.cfg.gunicorn_args(SYNC), app=BENCH_APP
            )
        self.stack.start_all()
        self.gunicorns = {MAIN: self.stack.procs["web"]}
        if SYNC in self.urls:
            self.gunicorns[SYNC] = self.stack.procs["web_" + SYNC]
        self.gunicorn = self.gunicorns[MAIN]
        self.worker = self.stack.procs["worker"]
        self.stack.wait_ready()
        for url in self.urls.values():
            wait_http(f"{url}/healthz", procs=self.stack.procs.values())
        self.flush_task().delay().get(timeout=60)  # the worker is up and can reach both stores
        self.cpu = {
            layout: CpuMeter(
                trees={"gunicorn": proc.pid, "celery_worker": self.worker.pid},
                names={"redis": "redis-server", "postgres": "postgres"},
            )
            for layout, proc in self.gunicorns.items()
        }
        threading.Thread(target=self._tick, daemon=True).start()

    def flush_task(self):
        return self.celery.tasks["counters.flush"]

    def _tick(self) -> None:
        while not self.ticker_stop.wait(FLUSH_INTERVAL_S):
            self.flush_task().delay()
            self.ticks += 1

    def stop(self) -> None:
        self.ticker_stop.set()
        if self.stack is not None:
            self.stack.stop_all()
            shutil.rmtree(self.stack.logs, ignore_errors=True)

    # -- measuring ------------------------------------------------------------

    def total_views(self) -> int:
        from app.extensions import db

        with self.app.app_context(), db.engine.connect() as conn:
            q = sa.text("SELECT coalesce(sum(view_count), 0)::bigint FROM posts")
            return int(conn.execute(q).scalar())

    def queue_depth(self) -> int:
        r = self.env.redis()
        try:
            return r.llen("celery") + r.hlen("unacked")
        finally:
            r.close()

    def pending(self) -> int:
        return sum(s["pending"] + s["inflight"] for s in self.counters().backlog())

    def flush_now(self) -> None:
        self.flush_task().delay().get(timeout=120)

    def settle(self, expect_views: int | None = None, baseline: int = 0) -> float:
        """Wait until every accepted view is in Postgres; returns when that was first true.

        Quiet means: no Celery message queued or unacked, no delta pending in Redis, and
        (given ``expect_views``) Postgres holds them; checked twice 50 ms apart, since a
        message the worker just popped is briefly in neither list.
        """
        deadline = time.monotonic() + self.cfg.drain_timeout_s
        first_quiet = None
        while time.monotonic() < deadline:
            quiet = False
            if self.queue_depth() == 0:
                if self.pending():
                    self.flush_now()
                    continue
                quiet = expect_views is None or self.total_views() - baseline >= expect_views
            if quiet and first_quiet is not None:
                return first_quiet
            first_quiet = time.monotonic() if quiet else None
            time.sleep(0.05)
        raise RuntimeError(f"views not persisted after {self.cfg.drain_timeout_s}s")

    def paths(self, variant: str, distribution: str) -> list[str]:
        pattern = VARIANTS[variant][1]
        ids = [self.hot_id] if distribution == "hot" else self.ids
        return [pattern.format(i) for i in ids]

    def worker_cpu(self, layout: str = MAIN) -> dict[int, float]:
        """CPU seconds of each gunicorn worker (the master's children)."""
        snap = snapshot()
        master = self.gunicorns[layout].pid
        return {pid: st[2] for pid, st in snap.items() if st[0] == master}

    def measure(
        self, variant: str, distribution: str, duration_s: float, layout: str = MAIN
    ) -> dict:
        """One run; repeated (up to ``UNBALANCED_RETRIES`` times) when one gunicorn worker
        got nearly every connection: the gunicorn workers race to accept wrk's
        connections, and now and then one of them wins them all, so half the machine
        idles. Such a run measures that accident, not the variant."""
        repeated = 0
        while True:
            out = self._measure_once(variant, distribution, duration_s, layout)
            shares = out["worker_cpu_shares"]
            if len(shares) < 2 or min(shares) >= UNBALANCED_SHARE * 2 / len(shares):
                break
            if repeated == UNBALANCED_RETRIES:  # kept, and flagged
                out["unbalanced"] = True
                break
            repeated += 1
        out["unbalanced_runs_repeated"] = repeated
        return out

    def _measure_once(
        self, variant: str, distribution: str, duration_s: float, layout: str
    ) -> dict:
        method = VARIANTS[variant][0]
        self.settle()
        before = self.total_views()
        model_before = self.counters().read_model_stats() if variant == "page" else None
        cpu = self.cpu[layout]
        cpu.start()
        workers_before = self.worker_cpu(layout)
        res = loadgen.run(
            self.urls[layout],
            method,
            self.paths(variant, distribution),
            duration_s=duration_s,
            connections=self.cfg.connections,
            tool=self.cfg.loadgen,
        )
        load_end = time.monotonic()
        workers = self.worker_cpu(layout)
        used_by = [workers[p] - workers_before[p] for p in workers if p in workers_before]
        out = {"variant": variant, "distribution": distribution, "layout": layout}
        out.update(res.as_dict())
        out["worker_cpu_shares"] = [round(u / max(sum(used_by), 1e-9), 3) for u in used_by]
        accepted = res.requests - res.non_2xx
        if variant != "noop":
            done = self.settle(expect_views=accepted, baseline=before)
            persisted = self.total_views() - before
            drain_s = 0.0 if variant == "sql_per_view" else done - load_end
            out.update(
                views_accepted=accepted,
                views_persisted=persisted,
                drain_s=round(drain_s, 3),
                persisted_views_per_s=round(persisted / (res.duration_s + drain_s), 1),
            )
            # in-flight requests at the load generator's cut-off may land uncounted by it
            if not accepted <= persisted <= accepted + self.cfg.connections:
                out["error"] = f"{accepted} views accepted but {persisted} persisted"
        if model_before is not None:
            out["read_model"] = read_model_use(model_before, self.counters().read_model_stats())
        used = cpu.stop()  # over the load and, for counted views, until persisted
        used["loadgen"] = res.client_cpu_s
        out["cpu_us_per_request"] = {
            k: round(v / max(1, res.requests) * 1e6, 1) for k, v in used.items()
        }
        if res.non_2xx or res.errors:
            out["error"] = f"{res.non_2xx} non-2xx responses, socket errors {res.errors}"
        return out


def read_model_use(before: dict, after: dict) -> dict:
    """Page reads of one run that found their row in the read model, and those that were
    read from Postgres (and filled, or fenced)."""
    return with_hit_rate({k: after[k] - before[k] for k in MODEL_COUNTS})


MODEL_COUNTS = ("hit", "miss", "filled", "fenced")


def with_hit_rate(use: dict) -> dict:
    """Read model counts with the share of reads that hit."""
    reads = use["hit"] + use["miss"]
    return {**use, "hit_rate": round(use["hit"] / reads, 4) if reads else None}


def count_round_trips(stack: HttpRun, n: int = 50) -> dict:
    """Redis round trips and SQL statements per request, counted in-process (test client):
    every command redis-py sends and every one of the engine's script connection."""
    from app.extensions import db

    app = stack.app
    counts = {"sql": 0, "checkouts": 0}

    def on_sql(*_a, **_k):
        counts["sql"] += 1

    def on_checkout(*_a, **_k):
        counts["checkouts"] += 1

    with app.app_context():
        engine = db.engine
    client = app.test_client()
    out = {}
    sa.event.listen(engine, "before_cursor_execute", on_sql)
    sa.event.listen(engine.pool, "checkout", on_checkout)
    try:
        with counting_round_trips() as sent:
            for variant in VARIANTS:
                method, pattern = VARIANTS[variant]
                for i in range(n + 5):  # the first calls load scripts, open connections
                    if i == 5:
                        sent.clear()
                        counts.update(sql=0, checkouts=0)
                    resp = client.open(pattern.format(stack.ids[i % 7]), method=method)
                    if resp.status_code >= 300:
                        raise RuntimeError(f"{variant}: {resp.status_code} {resp.get_data()[:200]}")
                out[variant] = {
                    "redis_round_trips": round(len(sent) / n, 2),
                    "sql_statements": round(counts["sql"] / n, 2),
                    "sql_connection_checkouts": round(counts["checkouts"] / n, 2),
                }
    finally:
        sa.event.remove(engine, "before_cursor_execute", on_sql)
        sa.event.remove(engine.pool, "checkout", on_checkout)
    return out


def calibrate(cfg: HttpConfig, stack: HttpRun, progress=None) -> dict:
    """The load generators against a static 204 server and against ``noop``."""
    port = free_port()
    server = spawn([sys.executable, "-m", "benchmarks.static_server", str(port)])
    tools = ["wrk", "python"] if loadgen.wrk_path() else ["python"]
    out: dict = {}
    try:
        wait_http(f"http://127.0.0.1:{port}/", procs=[server])
        for tool in tools:
            static = loadgen.run(
                f"http://127.0.0.1:{port}",
                "POST",
                ["/api/posts/1/view"],
                duration_s=min(cfg.duration_s, 3),
                connections=cfg.connections,
                tool=tool,
            )
            noop = loadgen.run(
                stack.base_url,
                "POST",
                stack.paths("noop", "hot"),
                duration_s=min(cfg.duration_s, 3),
                connections=cfg.connections,
                tool=tool,
            )
            out[tool] = {
                "static_rps": static.rps,
                "static_client_cpu_share": round(static.client_cpu_share, 3),
                "noop_rps": noop.rps,
                "noop_client_cpu_share": round(noop.client_cpu_share, 3),
                "client_cpu_us_per_request": round(noop.client_cpu_s / noop.requests * 1e6, 1),
                "static_over_noop": round(static.rps / noop.rps, 2),
            }
            if progress:
                progress.note(
                    f"{tool:>6}: static {static.rps:8.0f} req/s, noop {noop.rps:7.0f} req/s, "
                    f"client CPU {out[tool]['client_cpu_us_per_request']} us/request "
                    f"({noop.client_cpu_share:.0%} of the machine)"
                )
    finally:
        stop(server)
    return out


@contextmanager
def running_stack(env, cfg: HttpConfig, progress=None):
    stack = HttpRun(env, cfg, progress)
    stack.build_app()
    stack.migrate_and_seed()
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def plan(cfg: HttpConfig) -> list[tuple[str, str, str, int]]:
    """(layout, variant, distribution, round) in run order. Every round runs each fast
    variant of each gunicorn layout on both distributions back to back, and reverses
    the three orders on odd rounds, so the runs a ratio compares are close in time and a
    drift of the machine favours none. Celery runs last (its queue takes a while to
    drain)."""
    runs = []
    for rnd in range(cfg.rounds):
        odd = rnd % 2 == 1
        layouts = cfg.layouts()[::-1] if odd else cfg.layouts()
        dists = DISTRIBUTIONS[::-1] if odd else DISTRIBUTIONS
        for layout in layouts:
            order = cfg.variants(layout)[::-1] if odd else cfg.variants(layout)
            runs += [(layout, v, d, rnd) for v in order for d in dists]
    if cfg.runs_celery():
        runs += [(MAIN, "celery_per_view", dist, 0) for dist in DISTRIBUTIONS]
    return runs


# (name, numerator, denominator, metric): ratios taken within each round, then the median
PAIRED = (
    ("write_behind/noop hot", "write_behind/hot", "noop/hot", "rps"),
    ("write_behind/noop spread", "write_behind/spread", "noop/spread", "rps"),
    ("page/noop hot", "page/hot", "noop/hot", "rps"),
    ("page/noop spread", "page/spread", "noop/spread", "rps"),
    ("write_behind hot/spread", "write_behind/hot", "write_behind/spread", "rps"),
    ("coalesced/noop hot", "coalesced/hot", "noop/hot", "rps"),
    ("coalesced/noop spread", "coalesced/spread", "noop/spread", "rps"),
    ("policy/raw hot", "policy/hot", "write_behind/hot", "rps"),
    ("policy/raw spread", "policy/spread", "write_behind/spread", "rps"),
    ("policy/noop hot", "policy/hot", "noop/hot", "rps"),
    (
        "persisted write_behind/sql_per_view hot",
        "write_behind/hot",
        "sql_per_view/hot",
        "persisted_views_per_s",
    ),
)


def paired_ratios(samples: dict[str, list[dict]]) -> dict:
    """Per-round ratios of runs made close in time, and their median: steadier than a
    ratio of medians when other processes come and go on the machine."""
    out = {}
    for name, num, den, metric in PAIRED:
        a, b = samples.get(num, []), samples.get(den, [])
        ratios = [x[metric] / y[metric] for x, y in zip(a, b, strict=False) if y.get(metric)]
        if ratios:
            out[name] = {
                "median": round(statistics.median(ratios), 3),
                "rounds": [round(r, 3) for r in ratios],
            }
    return out


def summarize(samples: list[dict]) -> dict:
    """Median of each measured number over the rounds, plus the raw samples."""
    keys = ("rps", "p50_ms", "p90_ms", "p99_ms", "persisted_views_per_s", "drain_s")
    out = {}
    for k in keys:
        values = [s[k] for s in samples if k in s]
        if values:
            out[k] = round(statistics.median(values), 3)
    out["client_cpu_share"] = round(statistics.median(s["client_cpu_share"] for s in samples), 3)
    out["machine_cpu_busy"] = round(statistics.median(s["machine_cpu_busy"] for s in samples), 3)
    out["requests"] = sum(s["requests"] for s in samples)
    out["unbalanced_runs_repeated"] = sum(s.get("unbalanced_runs_repeated", 0) for s in samples)
    out["cpu_us_per_request"] = {
        k: round(statistics.median(s["cpu_us_per_request"][k] for s in samples), 1)
        for k in samples[0]["cpu_us_per_request"]
    }
    models = [s["read_model"] for s in samples if "read_model" in s]
    if models:
        out["read_model"] = with_hit_rate({k: sum(m[k] for m in models) for k in MODEL_COUNTS})
    errors = [s["error"] for s in samples if "error" in s]
    if errors:
        out["errors"] = errors
    out["samples"] = samples
    return out


def steps(cfg: HttpConfig) -> int:
    """Progress steps of :func:`run`."""
    fast = sum(len(cfg.variants(layout)) for layout in cfg.layouts()) * len(DISTRIBUTIONS)
    return (
        2
        + int(cfg.calibrate)
        + int(cfg.warmup_s > 0)
        + fast * cfg.rounds
        + len(DISTRIBUTIONS) * cfg.runs_celery()
    )


def run(env, cfg: HttpConfig, progress=None) -> dict:
    result: dict = {
        "config": {
            "gunicorn": "gunicorn " + " ".join(cfg.gunicorn_args(MAIN)),
            "connections": cfg.connections,
            "duration_s": cfg.duration_s,
            "rounds": cfg.rounds,
            "spread_posts": cfg.spread_posts,
            "celery_worker": f"prefork, concurrency {cfg.celery_concurrency}",
            "flush_interval_s": FLUSH_INTERVAL_S,
        }
    }
    step = progress.step if progress else _null_step
    with step("http: schema, seed posts, start gunicorn (each layout) + celery worker"):
        ctx = running_stack(env, cfg, progress)
        stack = ctx.__enter__()
    try:
        result["config"]["shards"] = stack.counters().keys.shards
        with step("http: Redis round trips and SQL statements per request"):
            result["round_trips"] = count_round_trips(stack)
            stack.settle()  # the counted requests' views and tasks land before any run
            if progress:
                progress.result(
                    "write_behind: "
                    f"{result['round_trips']['write_behind']['redis_round_trips']} Redis, "
                    f"{result['round_trips']['write_behind']['sql_statements']} SQL"
                )
        tool = cfg.loadgen if cfg.loadgen != "auto" else ("wrk" if loadgen.wrk_path() else "python")
        result["config"]["loadgen"] = tool
        if cfg.calibrate:
            with step("http: load generator calibration (static server vs noop)"):
                result["loadgen_calibration"] = calibrate(cfg, stack, progress)
        if cfg.warmup_s:
            with step("http: warm-up (every variant; every post's page read once)") as p:
                model = stack.warm_read_model()
                result["read_model_warm_up"] = model
                if progress:
                    p.result(f"read model: {model['filled']} rows filled")
                for layout in cfg.layouts():
                    for variant in cfg.variants(layout):
                        for dist in DISTRIBUTIONS:
                            stack.measure(variant, dist, cfg.warmup_s, layout)
        samples: dict = {layout: {} for layout in cfg.layouts()}
        for layout, variant, dist, rnd in plan(cfg):
            label = f"{variant} {dist}" + (f" [{layout}]" if layout != MAIN else "")
            with step(f"http: {label} (round {rnd + 1})", cfg.duration_s) as p:
                s = stack.measure(variant, dist, cfg.duration_s, layout)
                samples[layout].setdefault(f"{variant}/{dist}", []).append(s)
                if progress:
                    extra = (
                        f", persisted {s['persisted_views_per_s']:.0f} views/s"
                        if "persisted_views_per_s" in s
                        else ""
                    )
                    p.result(
                        f"{s['rps']:.0f} req/s, p50 {s['p50_ms']:.2f} ms, "
                        f"p99 {s['p99_ms']:.2f} ms{extra}"
                        + (f"  ERROR {s['error']}" if "error" in s else "")
                    )
        # the project's layout (gthread) at the top level, any other one under layouts
        result["layouts"] = {}
        for layout in cfg.layouts():
            variants: dict = {}
            for key, runs in samples[layout].items():
                variant, dist = key.split("/")
                variants.setdefault(variant, {})[dist] = summarize(runs)
            into = result if layout == MAIN else result["layouts"].setdefault(layout, {})
            into["variants"] = variants
            into["paired_ratios"] = paired_ratios(samples[layout])
            if layout != MAIN:
                into["gunicorn"] = "gunicorn " + " ".join(cfg.gunicorn_args(layout))
        result["unbalanced_runs_repeated"] = sum(
            s.get("unbalanced_runs_repeated", 0)
            for by_key in samples.values()
            for runs in by_key.values()
            for s in runs
        )
        result["flush_ticks"] = stack.ticks
    finally:
        ctx.__exit__(None, None, None)
    return result


@contextmanager
def _null_step(*_a, **_k):
    class _P:
        def result(self, _t):
            pass

    yield _P()
