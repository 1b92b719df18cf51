"""Pooled connections cut by the network under a running app: an idle one is pinged
and replaced before use; one in steady use fails one request, then is replaced."""

import time
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa

from app.extensions import db
from tests.app.conftest import create
from tests.proxy import TcpProxy


@pytest.fixture
def proxied_url(app_db):
    """The test database reached through a TCP proxy that the test can cut."""
    parts = urlsplit(app_db.url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    user = parts.username or "postgres"
    yield proxy, parts._replace(netloc=f"{user}@127.0.0.1:{proxy.port}").geturl()
    proxy.close()


def proxied_client(make_app, url: str, idle_s: float):
    app = make_app(DATABASE_URL=url, DATABASE_PING_IDLE_S=idle_s)
    connects = []
    with app.app_context():
        sa.event.listen(db.engine, "connect", lambda *_: connects.append(1))
    return app.test_client(), connects


def test_an_idle_connection_cut_meanwhile_is_replaced_before_use(
    client, user, make_app, proxied_url
):
    proxy, url = proxied_url
    post = create(client, user)
    page, connects = proxied_client(make_app, url, idle_s=0.2)
    assert page.get(f"/api/posts/{post}").status_code == 200
    pooled = len(connects)
    proxy.cut()  # what a Postgres restart or a firewall does to pooled connections
    proxy.restore()
    time.sleep(0.3)
    reply = page.get(f"/api/posts/{post}")
    assert reply.status_code == 200 and reply.json["counts"]["view_count"] == 2
    assert len(connects) > pooled  # the ping found a dead one and the pool replaced it


def test_a_connection_cut_in_steady_use_fails_one_request_then_is_replaced(
    client, user, make_app, proxied_url
):
    proxy, url = proxied_url
    post = create(client, user)
    page, connects = proxied_client(make_app, url, idle_s=60)
    assert page.get(f"/api/posts/{post}").status_code == 200
    pooled = len(connects)
    proxy.cut()
    proxy.restore()
    failed = page.get(f"/api/posts/{post}")
    assert failed.status_code == 503 and failed.json["error"] == "unavailable"
    reply = page.get(f"/api/posts/{post}")
    assert reply.status_code == 200 and len(connects) > pooled
    # the failed request's view was counted in Redis before the read failed
    assert reply.json["counts"]["view_count"] == 3


def test_idle_s_zero_pings_every_checkout(client, user, make_app, proxied_url):
    proxy, url = proxied_url
    post = create(client, user)
    page, connects = proxied_client(make_app, url, idle_s=0)
    assert page.get(f"/api/posts/{post}").status_code == 200
    pooled = len(connects)
    proxy.cut()
    proxy.restore()
    assert page.get(f"/api/posts/{post}").status_code == 200
    assert len(connects) > pooled
