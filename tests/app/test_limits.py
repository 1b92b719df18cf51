"""Abuse limits: sign-up per client address, actions and comments per user, counted in
Redis (shared by every web process); a JSON 429 with Retry-After, and nothing written."""

import pytest

from app import config
from tests.app.conftest import act, assert_error, bearer, create, new_user, row_counts

LIMITS = {"RATELIMIT_ENABLED": True, "LIMIT_SIGNUP": "3 per hour"}


def signup(client, name: str, **kwargs):
    return client.post("/api/users", json={"username": name}, **kwargs)


def refused(response) -> None:
    assert_error(response, 429, "too_many_requests")
    assert int(response.headers["Retry-After"]) > 0


def test_signup_is_limited_per_client_address_in_every_process(make_app, app, sql):
    first, second = make_app(**LIMITS).test_client(), make_app(**LIMITS).test_client()
    assert [signup(c, f"user{i}").status_code for i, c in enumerate([first, second, first])] == [
        201
    ] * 3
    before = row_counts(sql)
    refused(signup(second, "user3"))  # the other process knows the count
    assert row_counts(sql) == before  # a refused sign-up writes nothing
    other = {"environ_base": {"REMOTE_ADDR": "203.0.113.9"}}
    assert signup(first, "user4", **other).status_code == 201


def test_a_forwarded_for_header_is_ignored_without_a_trusted_proxy(make_app, app):
    client = make_app(**LIMITS).test_client()
    for i in range(3):
        spoofed = {"X-Forwarded-For": f"198.51.100.{i}"}
        assert signup(client, f"spoof{i}", headers=spoofed).status_code == 201
    refused(signup(client, "spoof9", headers={"X-Forwarded-For": "198.51.100.99"}))


def test_behind_a_trusted_proxy_the_forwarded_address_counts(make_app, app):
    client = make_app(**LIMITS, PROXY_HOPS=1).test_client()
    for i in range(3):
        assert (
            signup(client, f"proxied{i}", headers={"X-Forwarded-For": "192.0.2.1"}).status_code
            == 201
        )
    refused(signup(client, "proxied9", headers={"X-Forwarded-For": "192.0.2.1"}))
    assert signup(client, "other0", headers={"X-Forwarded-For": "192.0.2.2"}).status_code == 201


def test_actions_are_limited_per_user_and_a_refused_share_counts_nothing(make_app, app):
    client = make_app(RATELIMIT_ENABLED=True, LIMIT_ACTIONS="4 per minute").test_client()
    alice, bob = new_user(client, "alice"), new_user(client, "bob")
    post = create(client, alice)
    assert [act(client, alice, "share", "post", post).status_code for _ in range(4)] == [201] * 4
    refused(act(client, alice, "share", "post", post))
    refused(client.delete(f"/api/actions/like/post/{post}", headers=bearer(alice)))
    assert act(client, bob, "share", "post", post).status_code == 201  # another user
    assert client.get(f"/api/posts/{post}/counts").json["shares_count"] == 5


def test_comments_are_limited_per_user(make_app, app):
    client = make_app(RATELIMIT_ENABLED=True, LIMIT_COMMENTS="2 per minute").test_client()
    alice = new_user(client, "alice")
    post = create(client, alice)
    url, body = f"/api/posts/{post}/comments", {"content": "hi"}
    for _ in range(2):
        assert client.post(url, json=body, headers=bearer(alice)).status_code == 201
    refused(client.post(url, json=body, headers=bearer(alice)))
    assert client.get(f"/api/posts/{post}/counts").json["comments_count"] == 2


def test_views_are_never_limited(make_app, app):
    client = make_app(RATELIMIT_ENABLED=True, LIMIT_SIGNUP="1 per hour").test_client()
    post = create(client, new_user(client, "alice"))
    assert {client.post(f"/api/posts/{post}/view").status_code for _ in range(50)} == {204}


@pytest.mark.parametrize(("value", "enabled"), [("0", False), ("1", True), ("false", False)])
def test_ratelimit_enabled_is_read_from_the_environment(value, enabled):
    assert config.load({"RATELIMIT_ENABLED": value})["RATELIMIT_ENABLED"] is enabled


def test_limits_off_let_everything_through(make_app, app):
    client = make_app(RATELIMIT_ENABLED=False, LIMIT_SIGNUP="1 per hour").test_client()
    assert {signup(client, f"free{i}").status_code for i in range(5)} == {201}
