"""The example site (examples/recipes) adopts the engine through its public API only:
exact counts under concurrent load, live reads before any flush, a real worker and
RedBeat beat that flush on schedule, a worker SIGKILLed inside a flush, and a reconcile
that repairs planted drift."""

from __future__ import annotations

import ast
import os
import signal
import subprocess
import sys

import pytest
import sqlalchemy as sa

from tests.examples.conftest import Traffic
from tests.examples.isolation import EXAMPLE, REDIS_DB, SHARDS
from tests.processes import wait_for
from tests.servers import ROOT, admin_pg_url, redis_url

WAIT_S = 60


def error(response, status: int) -> None:
    assert response.status_code == status, (response.status_code, response.data[:200])
    assert set(response.json) == {"error", "message"}, response.json


def counter_keys(site) -> list[bytes]:
    return sorted(site.r.scan_iter(match=f"{{{site.scope}*", count=1000))


def test_live_reads_equal_the_acknowledged_counts_before_any_flush(site):
    ids = site.create_recipes(5)
    traffic = Traffic(site.app, ids, threads=8, ops=150).start()
    traffic.join()

    acked = traffic.acked(ids)
    assert sum(v for v, _ in acked.values()) > 0 and any(h for _, h in acked.values())
    assert site.shown(ids) == acked
    assert {i: h for i, (_, h) in acked.items() if h} == dict(site.hearts())
    assert site.stored() == dict.fromkeys(ids, (0, 0))  # nothing flushed: all of it is live


def test_hearts_are_a_per_user_toggle(site):
    (recipe,) = site.create_recipes(1)
    client = site.app.test_client()
    ann, bob = {"X-User": "ann"}, {"X-User": "bob"}
    assert client.post(f"/recipes/{recipe}/hearts", headers=ann).status_code == 201
    assert client.post(f"/recipes/{recipe}/hearts", headers=ann).status_code == 200
    assert client.post(f"/recipes/{recipe}/hearts", headers=bob).status_code == 201
    assert client.get(f"/recipes/{recipe}").json["hearts_count"] == 2
    assert client.delete(f"/recipes/{recipe}/hearts", headers=ann).status_code == 204
    error(client.delete(f"/recipes/{recipe}/hearts", headers=ann), 404)
    assert client.get(f"/recipes/{recipe}").json["hearts_count"] == 1
    assert site.hearts() == {recipe: 1}


def test_a_deleted_recipe_counts_nothing_more_and_its_pending_deltas_are_dropped(site):
    gone, kept = site.create_recipes(2)
    client = site.app.test_client()
    for recipe in (gone, kept):
        assert client.post(f"/recipes/{recipe}/view").status_code == 204
        assert (
            client.post(f"/recipes/{recipe}/hearts", headers={"X-User": "bob"}).status_code == 201
        )
    assert client.delete(f"/recipes/{gone}", headers={"X-User": "ann"}).status_code == 204

    error(client.post(f"/recipes/{gone}/view"), 404)
    error(client.post(f"/recipes/{gone}/hearts", headers={"X-User": "bob"}), 404)
    error(client.get(f"/recipes/{gone}"), 404)
    flushed = site.counters.flush_all().as_dict()
    assert flushed["errors"] == [] and flushed["rows_missing"] == 1
    assert site.pending() == 0
    assert site.stored() == {kept: (1, 1)} and site.hearts() == {kept: 1}


@pytest.mark.parametrize(
    "method, path, kwargs, status",
    [
        ("post", "/recipes", {"json": {"title": "soup"}}, 400),
        ("post", "/recipes", {"json": {"title": "", "author": "ann"}}, 400),
        ("post", "/recipes", {"json": {"title": "soup\u0000", "author": "ann"}}, 400),
        ("post", "/recipes", {"json": {"title": 5, "author": "ann"}}, 400),
        ("post", "/recipes", {"json": ["soup", "ann"]}, 400),
        ("post", "/recipes", {"data": "{", "content_type": "application/json"}, 400),
        ("post", "/recipes/{missing}/view", {}, 404),
        ("post", "/recipes/0/view", {}, 404),
        ("post", "/recipes/99999999999999999999/view", {}, 404),
        ("post", "/recipes/-1/view", {}, 404),
        ("post", "/recipes/{missing}/hearts", {"headers": {"X-User": "ann"}}, 404),
        ("post", "/recipes/99999999999999999999/hearts", {"headers": {"X-User": "ann"}}, 404),
        ("post", "/recipes/{id}/hearts", {}, 400),
        ("post", "/recipes/{id}/hearts", {"headers": {"X-User": " "}}, 400),
        ("delete", "/recipes/{id}/hearts", {"headers": {"X-User": "ann"}}, 404),
        ("delete", "/recipes/{id}", {"headers": {"X-User": "bob"}}, 403),
        ("delete", "/recipes/{id}", {}, 400),
        ("delete", "/recipes/{missing}", {"headers": {"X-User": "ann"}}, 404),
        ("get", "/recipes/{missing}", {}, 404),
        ("get", "/recipes/99999999999999999999", {}, 404),
        ("get", "/recipes/{id}/view", {}, 405),
        ("post", "/admin/counters/flush", {}, 403),
        ("post", "/admin/counters/flush", {"headers": {"X-Admin-Token": "nope\u00e9"}}, 403),
    ],
)
def test_bad_requests_get_a_json_4xx_and_change_nothing(site, method, path, kwargs, status):
    (recipe,) = site.create_recipes(1)
    client = site.app.test_client()
    before = ({k: site.r.dump(k) for k in counter_keys(site)}, site.stored(), site.hearts())
    url = path.format(id=recipe, missing=recipe + 1)
    error(getattr(client, method)(url, **kwargs), status)
    assert ({k: site.r.dump(k) for k in counter_keys(site)}, site.stored(), site.hearts()) == before


def test_admin_blueprint_metrics_and_cli(site):
    (recipe,) = site.create_recipes(1)
    client = site.app.test_client()
    client.post(f"/recipes/{recipe}/view")
    flushed = client.post("/admin/counters/flush", headers={"X-Admin-Token": "admin-token"})
    assert flushed.status_code == 200 and flushed.json["flushed"] == 1
    assert site.stored() == {recipe: (1, 0)}
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'counter_increments_accepted_total{counter="recipes.view_count"} 1.0' in metrics
    cli = site.app.test_cli_runner()
    stats = cli.invoke(args=["counters", "stats", "--json"])
    assert stats.exit_code == 0, stats.output
    assert '"pending": 0' in stats.output
    schedule = cli.invoke(args=["counters", "schedule"])
    assert schedule.exit_code == 0, schedule.output
    assert "flush-counters: every 0.5 s (from the config)" in schedule.output
    assert (
        "CREATE TABLE IF NOT EXISTS counter_shards"
        in cli.invoke(args=["counters", "schema-sql"]).output
    )


def test_the_dashboard_signs_in_with_the_admin_token_and_charts_the_views(site):
    (recipe,) = site.create_recipes(1)
    client = site.app.test_client()
    assert client.get("/admin/dashboard/data").status_code == 401
    assert client.post("/admin/dashboard", data={"token": "nope"}).status_code == 401
    signed_in = client.post("/admin/dashboard", data={"token": "admin-token"})
    assert signed_in.status_code == 303 and signed_in.headers["Location"] == "/admin/dashboard"
    assert "uPlot.iife.min.js" in client.get("/admin/dashboard").get_data(as_text=True)
    with client.get("/admin/dashboard/static/uPlot.iife.min.js") as vendored:
        assert vendored.status_code == 200
    client.get("/admin/dashboard/data")  # this minute's sample
    for _ in range(3):
        client.post(f"/recipes/{recipe}/view")
    assert client.post(f"/recipes/{recipe}/hearts", headers={"X-User": "ann"}).status_code == 201
    data = client.get("/admin/dashboard/data").json
    assert data["series"]["views"][-1] == 3  # since the first read's sample
    assert data["pending"] == 2


def stalled_flush(site) -> int | None:
    """The backend of a flush whose UPDATE of recipes waits for a row lock."""
    query = sa.text(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND query LIKE 'UPDATE recipes %'"
    )
    with site.sql.connect() as conn:
        return conn.execute(query).scalar()


def backend_alive(site, pid: int) -> bool:
    with site.sql.connect() as conn:
        query = sa.text("SELECT 1 FROM pg_stat_activity WHERE pid = :pid")
        return conn.execute(query, {"pid": pid}).first() is not None


def applied_seq(site, shard: int) -> int:
    with site.sql.connect() as conn:
        query = sa.text("SELECT applied_seq FROM counter_shards WHERE scope = :s AND shard = :n")
        return conn.execute(query, {"s": site.scope, "n": shard}).scalar() or 0


def windows(site, ids: list[int]) -> dict[int, int]:
    """Views of the last 24 hours as the engine's live window read gives them."""
    return {i: site.counters.window_series("recipes.view_count", i, "24h").total for i in ids}


def bucket_sums(site) -> dict[int, int]:
    query = """SELECT row_id, sum(n) FROM (SELECT row_id, n FROM counter_hourly
        UNION ALL SELECT row_id, n FROM counter_daily) b GROUP BY row_id"""
    with site.sql.connect() as conn:
        return {r: int(n) for r, n in conn.execute(sa.text(query))}


def settled(site, acked: dict[int, tuple[int, int]]) -> bool:
    """Nothing left in Redis, and Postgres holds exactly the acknowledged counts."""
    return site.pending() == 0 and site.stored() == acked


@pytest.mark.timeout(240)
def test_worker_killed_inside_a_flush_under_load_then_exact_totals(site, processes):
    ids = site.create_recipes(12)
    victim = ids[0]
    shard = victim % SHARDS
    first, first_log = processes.start("worker1", site.worker_cmd("w1"), site.env)
    _, beat_log = processes.start("beat", site.beat_cmd(), site.env)
    logs = [first_log, beat_log]

    with Traffic(site.app, ids) as before:
        wait_for("beat-scheduled flushes", lambda: site.stored()[victim][0] > 0, WAIT_S, logs)
        # Hold the victim's row (hearts take FOR KEY SHARE, so they go on): the next
        # flush of its shard claims and numbers a batch, then its UPDATE waits for us.
        with site.sql.connect() as holder:
            held = holder.begin()
            holder.execute(
                sa.text("SELECT 1 FROM recipes WHERE id = :id FOR NO KEY UPDATE"), {"id": victim}
            )
            pid = wait_for(
                "a flush stalled inside its transaction", lambda: stalled_flush(site), WAIT_S, logs
            )
            os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool children
            first.wait()
            held.rollback()
        wait_for(
            "the killed flush's transaction rolled back",
            lambda: not backend_alive(site, pid),
            WAIT_S,
            logs,
        )
    stranded = site.counters.backlog()[shard]
    assert stranded["inflight"] > 0 and stranded["inflight_seq"] > applied_seq(site, shard)

    # the claimed batch is neither lost nor counted twice by live reads
    assert site.shown(ids) == before.acked(ids)
    assert windows(site, ids) == {i: before.views[i] for i in ids}

    _, second_log = processes.start("worker2", site.worker_cmd("w2"), site.env)
    logs.append(second_log)
    with Traffic(site.app, ids) as after:
        wait_for(
            "the stranded batch resumed",
            lambda: site.counters.shared_stats()["totals"]["claims_resumed"] >= 1,
            WAIT_S,
            logs,
        )
    acked = {i: (before.views[i] + after.views[i], before.hearts[i] + after.hearts[i]) for i in ids}
    wait_for(
        "Postgres holds exactly the acknowledged counts",
        lambda: settled(site, acked),
        WAIT_S,
        logs,
    )
    assert {i: h for i, (_, h) in acked.items() if h} == dict(site.hearts())
    assert applied_seq(site, shard) >= stranded["inflight_seq"]
    # every row's hourly buckets sum to its view_count, and window reads agree
    assert bucket_sums(site) == {i: v for i, (v, _) in acked.items() if v}
    assert windows(site, ids) == {i: v for i, (v, _) in acked.items()}


def total(site, name: str) -> int:
    return site.counters.shared_stats()["totals"][name]


@pytest.mark.timeout(180)
def test_reconcile_task_repairs_planted_drift_while_hearts_keep_coming(site, processes):
    ids = site.create_recipes(3)
    first = Traffic(site.app, ids, threads=4, ops=60).start()
    first.join()
    _, worker_log = processes.start("worker", site.worker_cmd("w"), site.env)
    _, beat_log = processes.start("beat", site.beat_cmd(), site.env)
    logs = [worker_log, beat_log]
    wait_for("flushed by the beat", lambda: settled(site, first.acked(ids)), WAIT_S, logs)

    drifted = ids[0]
    with site.sql.begin() as conn:
        query = "UPDATE recipes SET hearts_count = hearts_count + 99 WHERE id = :id"
        conn.execute(sa.text(query), {"id": drifted})
    site.counters.changed("recipes", [drifted])  # a column changed behind the engine's back
    views, hearts = first.acked(ids)[drifted]
    assert site.shown([drifted]) == {drifted: (views, hearts + 99)}

    # the recount runs among hearts written (counted_write) and flushed at the same time
    with Traffic(site.app, ids, threads=4) as second:
        site.send("counters.reconcile")
        wait_for("the reconcile task ran", lambda: total(site, "reconciles") >= 1, WAIT_S, logs)
    acked = {i: (first.views[i] + second.views[i], first.hearts[i] + second.hearts[i]) for i in ids}
    wait_for(
        "Postgres holds exactly the acknowledged counts", lambda: settled(site, acked), WAIT_S, logs
    )
    assert total(site, "reconcile_fixed") == 1  # the planted drift, and nothing else
    assert {i: h for i, (_, h) in acked.items() if h} == dict(site.hearts())
    assert site.shown(ids) == acked


def test_smoke_script_counts_a_view_and_a_heart_into_postgres():
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FLASK_")},
        "PYTHONPATH": os.pathsep.join([str(EXAMPLE), str(ROOT)]),
        "SMOKE_PG_ADMIN_URL": admin_pg_url(),
        "SMOKE_REDIS_URL": redis_url(REDIS_DB),
    }
    done = subprocess.run(
        [sys.executable, str(EXAMPLE / "smoke.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert '"view_count": 1, "hearts_count": 1' in done.stdout


def test_the_example_imports_the_engine_public_api_and_nothing_of_the_reference_site():
    imported = set()
    for path in EXAMPLE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    assert not any(m == "app" or m.startswith(("app.", "tests")) for m in imported)
    engine_modules = {m for m in imported if m.split(".")[0] == "engine"}
    assert engine_modules == {"engine", "engine.celery", "engine.flask"}
