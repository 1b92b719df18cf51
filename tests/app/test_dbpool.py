"""Pooled connections cut by the network under a running app: an idle one is pinged
and replaced before use; one in steady use fails one request, then is replaced."""

import time

import sqlalchemy as sa

from app.extensions import db
from tests.app.conftest import create


def warm_then_cut(client, user, make_app, pg_proxy, idle_s: float):
    """A post, an app whose pool reaches Postgres through the proxy (one page served),
    then every pooled connection cut. Returns (page client, post, connects, pooled)."""
    proxy, url = pg_proxy
    post = create(client, user)
    # without the read model, so that every page asks Postgres
    app = make_app(DATABASE_URL=url, DATABASE_PING_IDLE_S=idle_s, COUNTERS_READ_MODEL_TTL_S=0)
    connects = []
    with app.app_context():
        sa.event.listen(db.engine, "connect", lambda *_: connects.append(1))
    page = app.test_client()
    assert page.get(f"/api/posts/{post}").status_code == 200
    pooled = len(connects)
    proxy.cut()  # what a Postgres restart or a firewall does to pooled connections
    proxy.restore()
    return page, post, connects, pooled


def test_an_idle_connection_cut_meanwhile_is_replaced_before_use(client, user, make_app, pg_proxy):
    page, post, connects, pooled = warm_then_cut(client, user, make_app, pg_proxy, 0.2)
    time.sleep(0.3)
    reply = page.get(f"/api/posts/{post}")
    assert reply.status_code == 200 and reply.json["counts"]["view_count"] == 2
    assert len(connects) > pooled  # the ping found a dead one and the pool replaced it


def test_a_connection_cut_in_steady_use_fails_one_request_then_is_replaced(
    client, user, make_app, pg_proxy
):
    page, post, connects, pooled = warm_then_cut(client, user, make_app, pg_proxy, 60)
    failed = page.get(f"/api/posts/{post}")
    assert failed.status_code == 503 and failed.json["error"] == "unavailable"
    reply = page.get(f"/api/posts/{post}")
    assert reply.status_code == 200 and len(connects) > pooled
    # the failed request's view was counted in Redis before the read failed
    assert reply.json["counts"]["view_count"] == 3


def test_idle_s_zero_pings_every_checkout(client, user, make_app, pg_proxy):
    page, post, connects, pooled = warm_then_cut(client, user, make_app, pg_proxy, 0)
    assert page.get(f"/api/posts/{post}").status_code == 200
    assert len(connects) > pooled
