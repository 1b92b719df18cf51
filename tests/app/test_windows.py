"""GET /api/<posts|articles>/<id>/stats and /api/<posts|articles>/trending (CONTRACT §7)."""

from datetime import datetime, timedelta
from itertools import pairwise

import pytest
import sqlalchemy as sa

from tests.app.conftest import ADMIN_TOKEN, assert_error, bearer, create

KINDS = ["posts", "articles"]
STEPS = {
    "24h": (24, timedelta(hours=1)),
    "7d": (168, timedelta(hours=1)),
    "30d": (30, timedelta(days=1)),
}


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


def view(client, kind: str, row_id: int, n: int = 1) -> None:
    for _ in range(n):
        assert client.post(f"/api/{kind}/{row_id}/view").status_code == 204


def flush(client) -> None:
    response = client.post("/api/admin/counters/flush", headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 200, response.json


def stats(client, kind: str, row_id: int, window: str) -> dict:
    response = client.get(f"/api/{kind}/{row_id}/stats?window={window}")
    assert response.status_code == 200, response.json
    return response.json


def buckets_equal_view_counts(sql, table: str) -> None:
    query = f"""SELECT p.id, p.view_count, coalesce(b.n, 0) FROM {table} p
        LEFT JOIN (SELECT row_id, sum(n) AS n FROM (
              SELECT row_id, n FROM counter_hourly WHERE tbl = :t AND col = 'view_count'
              UNION ALL
              SELECT row_id, n FROM counter_daily WHERE tbl = :t AND col = 'view_count') x
           GROUP BY row_id) b ON b.row_id = p.id"""
    with sql.connect() as conn:
        rows = conn.execute(sa.text(query), {"t": table}).all()
    assert rows and all(views == buckets for _, views, buckets in rows), rows


@pytest.mark.parametrize("window", list(STEPS))
def test_stats_series_counts_views_before_and_after_the_flush(client, user, kind, sql, window):
    row_id = create(client, user, kind)
    view(client, kind, row_id, 3)
    before = stats(client, kind, row_id, window)
    assert set(before) == {"id", "window", "step", "views", "series"}
    n, step = STEPS[window]
    assert (before["id"], before["window"], before["views"]) == (row_id, window, 3)
    assert before["step"] == ("day" if window == "30d" else "hour")
    starts = [datetime.fromisoformat(b["start"]) for b in before["series"]]
    assert len(starts) == n and all(b - a == step for a, b in pairwise(starts))
    assert all(s.utcoffset() == timedelta(0) for s in starts)
    assert [b["views"] for b in before["series"]][-1] == 3
    assert sum(b["views"] for b in before["series"]) == 3
    flush(client)
    assert stats(client, kind, row_id, window) == before
    buckets_equal_view_counts(sql, kind)


def test_stats_of_unknown_ids_are_404_and_unknown_windows_400(client, user, kind, unchanged):
    row_id = create(client, user, kind)
    with unchanged():
        assert_error(client.get(f"/api/{kind}/{row_id + 1}/stats?window=24h"), 404, "not_found")
        assert_error(client.get(f"/api/{kind}/0/stats"), 404)
        assert_error(client.get(f"/api/{kind}/abc/stats"), 404)
        for bad in ("1y", "", "24H", "30d%00"):
            assert_error(client.get(f"/api/{kind}/{row_id}/stats?window={bad}"), 400, "bad_window")


def test_trending_ranks_window_views_then_newest_with_live_counts(client, user, kind, sql):
    a, b, c, d = (create(client, user, kind, title=t) for t in "abcd")
    view(client, kind, a, 2)
    view(client, kind, b, 5)
    flush(client)
    view(client, kind, c, 2)  # pending only: counted at once
    view(client, kind, a, 1)
    for window in ("24h", "7d"):
        response = client.get(f"/api/{kind}/trending?window={window}")
        assert response.status_code == 200
        body = response.json
        assert body["window"] == window
        ranked = [(i["id"], i["window_views"]) for i in body["items"]]
        assert ranked == [(b, 5), (a, 3), (c, 2)]  # d has no views: not trending
        first = body["items"][0]
        assert first["title"] == "b" and first["counts"]["view_count"] == 5
    top = client.get(f"/api/{kind}/trending?window=7d&limit=1").json["items"]
    assert [i["id"] for i in top] == [b]
    view(client, kind, c, 1)  # ties with a: the newer one first
    ranked = [i["id"] for i in client.get(f"/api/{kind}/trending").json["items"]]
    assert ranked == [b, c, a]
    flush(client)
    assert [i["id"] for i in client.get(f"/api/{kind}/trending").json["items"]] == ranked
    buckets_equal_view_counts(sql, kind)


@pytest.mark.parametrize("query", ["window=30d", "window=1h", "limit=0", "limit=101", "limit=x"])
def test_trending_bad_window_or_limit_is_400(client, kind, unchanged, query):
    with unchanged():
        assert_error(client.get(f"/api/{kind}/trending?{query}"), 400)


def test_deleted_items_leave_trending(client, user, kind):
    keep, gone = create(client, user, kind), create(client, user, kind)
    view(client, kind, keep, 1)
    view(client, kind, gone, 4)
    flush(client)
    assert client.delete(f"/api/{kind}/{gone}", headers=bearer(user)).status_code == 204
    assert [i["id"] for i in client.get(f"/api/{kind}/trending").json["items"]] == [keep]
