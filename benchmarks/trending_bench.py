"""Trending at scale: ``GET /api/posts/trending`` over 100k posts and 14 days of hourly
view buckets, against baselines measured in the same run.

The site (the real ``create_app()``, its migrations) serves the requests in process,
through Flask's test client, so the figures are the request's own cost (routing, the
engine's Redis round trip and Postgres snapshot, the JSON) without a network or a load
generator. Buckets are generated in SQL: every post gets views in ``hours_per_post``
random hours of the last 14 days; each post's ``view_count`` and the trending totals
are what the flush would have left (their sums), and ``pending`` views wait in Redis.

Measured, interleaved request by request: ``trending 24h`` and ``trending 7d`` (the
engine's kept totals plus what Redis holds), the newest-posts list
(``GET /api/posts?limit=20``, the site's plainest read: the baseline), and
``naive 24h``: the query a site without kept totals would run per request (sum the
window's buckets of every post, sort).
"""

from __future__ import annotations

import random
import statistics
import time
import uuid

import sqlalchemy as sa

SCOPE = "bench"
POSTS = 100_000
DAYS = 14
HOURS_PER_POST = 24  # buckets per post, spread over the DAYS
PENDING_VIEWS = 5_000
REQUESTS = 400  # per measured kind

BUCKETS = sa.text(
    """INSERT INTO counter_hourly (scope, tbl, col, row_id, hour, n)
    SELECT :scope, 'posts', 'view_count', id, hour, sum(n) FROM (
        SELECT p.id, date_trunc('hour', now()) - floor(random() * :hours) * interval '1 hour'
               AS hour, 1 + floor(random() * random() * 200)::bigint AS n
        FROM posts p, generate_series(1, :per_post)) b
    GROUP BY id, hour"""
)
VIEW_COUNTS = sa.text(
    """UPDATE posts p SET view_count = s.n FROM (
        SELECT row_id, sum(n) AS n FROM counter_hourly WHERE scope = :scope GROUP BY row_id) s
    WHERE p.id = s.row_id"""
)
EDGES = sa.text(
    """INSERT INTO counter_window_edges (scope, tbl, col, win, edge)
    VALUES (:scope, 'posts', 'view_count', :win, to_timestamp(:edge * 3600))"""
)
SERIES = sa.text(
    """INSERT INTO counter_series (scope, tbl, col) VALUES (:scope, 'posts', 'view_count')
    ON CONFLICT (scope, tbl, col) DO NOTHING"""
)
TOTALS = sa.text(
    """INSERT INTO counter_trending_totals (series, row_id, n_24h, n_7d)
    SELECT s.series, b.row_id,
           coalesce(sum(b.n) FILTER (WHERE b.hour >= to_timestamp(:edge_24h * 3600)), 0),
           sum(b.n)
      FROM counter_hourly b
      JOIN counter_series s ON s.scope = b.scope AND s.tbl = b.tbl AND s.col = b.col
     WHERE b.scope = :scope AND b.hour >= to_timestamp(:edge_7d * 3600)
     GROUP BY s.series, b.row_id"""
)
NAIVE = sa.text(
    """SELECT b.row_id, sum(b.n) AS n FROM counter_hourly b
    WHERE b.scope = :scope AND b.tbl = 'posts' AND b.col = 'view_count'
      AND b.hour >= to_timestamp(:edge * 3600)
    GROUP BY b.row_id ORDER BY n DESC, b.row_id DESC LIMIT 20"""
)


def build_site(env):
    import flask_migrate

    from app import create_app

    config = {
        "DATABASE_URL": env.database_url,
        "REDIS_URL": env.redis_url,
        "COUNTERS_SCOPE": SCOPE,
        "RATELIMIT_ENABLED": False,
        "ADMIN_TOKEN": "bench-admin",
    }
    app = create_app(config)
    with app.app_context():
        flask_migrate.upgrade()
    return app


def seed(app, posts: int, per_post: int) -> dict:
    from app.extensions import db
    from engine import WINDOWS

    client = app.test_client()
    # a name of its own: other parts of the run sign up in the same database
    answer = client.post("/api/users", json={"username": f"trend_{uuid.uuid4().hex[:8]}"})
    assert answer.status_code == 201, answer.get_data(as_text=True)
    user = answer.get_json()
    now_hour = current_hour()
    started = time.perf_counter()
    with app.app_context(), db.engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO posts (title, content, author_id) "
                "SELECT 'post ' || g, repeat('lorem ipsum ', 20), :author "
                "FROM generate_series(1, :n) g"
            ),
            {"author": user["id"], "n": posts},
        )
        conn.execute(BUCKETS, {"scope": SCOPE, "hours": DAYS * 24, "per_post": per_post})
        conn.execute(VIEW_COUNTS, {"scope": SCOPE})
        edges = {f"edge_{win}": WINDOWS[win].first_hour(now_hour) for win in ("24h", "7d")}
        for win in ("24h", "7d"):
            conn.execute(EDGES, {"scope": SCOPE, "win": win, "edge": edges[f"edge_{win}"]})
        conn.execute(SERIES, {"scope": SCOPE})
        conn.execute(TOTALS, {"scope": SCOPE, **edges})
        buckets = conn.execute(sa.text("SELECT count(*) FROM counter_hourly")).scalar_one()
    with app.app_context(), db.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("ANALYZE"))
    return {"buckets": buckets, "seed_s": round(time.perf_counter() - started, 1)}


def current_hour() -> int:
    return int(time.time() // 3600)


def p(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(
    env,
    posts: int = POSTS,
    per_post: int = HOURS_PER_POST,
    requests: int = REQUESTS,
    pending: int = PENDING_VIEWS,
    progress=None,
) -> dict:
    from app.counters import counters
    from app.extensions import db
    from engine import WINDOWS

    app = build_site(env)
    seeded = seed(app, posts, per_post)
    engine = counters.get(app)
    rnd = random.Random(7)
    with app.app_context():
        ids = [r[0] for r in db.session.execute(sa.text("SELECT id FROM posts"))]
    engine.incr_many([("posts.view_count", rnd.choice(ids), 1) for _ in range(pending)])
    client = app.test_client()
    edge = WINDOWS["24h"].first_hour(current_hour())

    def naive() -> None:
        with app.app_context(), db.engine.connect() as conn:
            conn.execute(NAIVE, {"scope": SCOPE, "edge": edge}).all()

    def get(path: str):
        def call() -> None:
            response = client.get(path)
            if response.status_code != 200:
                raise RuntimeError(f"{path}: {response.status_code} {response.get_data()[:200]}")

        return call

    kinds = {
        "trending_24h": get("/api/posts/trending?window=24h&limit=20"),
        "trending_7d": get("/api/posts/trending?window=7d&limit=20"),
        "list_newest": get("/api/posts?limit=20"),
        "naive_24h_query": naive,
    }
    for call in kinds.values():  # warm caches and pools
        for _ in range(5):
            call()
    samples: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(requests):
        for name, call in kinds.items():
            t0 = time.perf_counter()
            call()
            samples[name].append((time.perf_counter() - t0) * 1000)
    top = client.get("/api/posts/trending?window=24h&limit=20").get_json()["items"]
    engine.close()
    with app.app_context():
        db.engine.dispose()
    out = {
        "posts": posts,
        "days": DAYS,
        "pending_views": pending,
        "requests_each": requests,
        **seeded,
        "top_window_views": [i["window_views"] for i in top[:3]],
        "latency_ms": {
            name: {
                "p50": round(statistics.median(s), 3),
                "p99": round(p(s, 0.99), 3),
                "max": round(max(s), 3),
            }
            for name, s in samples.items()
        },
    }
    lat = out["latency_ms"]
    out["trending_24h_p99_vs_list_p99"] = round(
        lat["trending_24h"]["p99"] / lat["list_newest"]["p99"], 3
    )
    out["naive_p99_vs_trending_24h_p99"] = round(
        lat["naive_24h_query"]["p99"] / lat["trending_24h"]["p99"], 3
    )
    return out
