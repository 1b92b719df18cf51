"""POST /api/users: sign up, token once, stored hashed."""

import hashlib

import pytest
import sqlalchemy as sa

from tests.app.conftest import assert_error, bearer, create


def test_create_user_returns_id_username_and_token(client, sql):
    response = client.post("/api/users", json={"username": "Alice_01"})
    assert response.status_code == 201
    body = response.json
    assert set(body) == {"id", "username", "token"}
    assert body["username"] == "Alice_01" and body["id"] >= 1 and len(body["token"]) >= 32
    with sql.connect() as conn:
        stored = conn.execute(sa.text("SELECT token_hash FROM users")).scalar_one()
    assert stored == hashlib.sha256(body["token"].encode()).hexdigest()
    create(client, body["token"])  # the token works


def test_username_taken_is_409(client, user, unchanged):
    with unchanged():
        assert_error(client.post("/api/users", json={"username": "alice"}), 409, "username_taken")


@pytest.mark.parametrize(
    "username",
    ["ab", "a" * 33, "a-b", "ali ce", "alicé", "alice\n", "", 123, None, ["alice"], True],
)
def test_invalid_username_is_400(client, unchanged, username):
    with unchanged():
        assert_error(client.post("/api/users", json={"username": username}), 400)


def test_username_limits_are_inclusive(client):
    for name in ("abc", "z" * 32):
        assert client.post("/api/users", json={"username": name}).status_code == 201


@pytest.mark.parametrize("body", ["{", "", "[]", '"alice"', "null", "{'username': 'x'}"])
def test_bad_json_is_400(client, unchanged, body):
    with unchanged():
        response = client.post("/api/users", data=body, content_type="application/json")
        assert_error(response, 400, "invalid_json")


def test_missing_username_is_400(client, unchanged):
    with unchanged():
        assert_error(client.post("/api/users", json={}), 400)


def test_bad_tokens_are_401(client, user, unchanged):
    body = {"title": "t", "content": "c"}
    with unchanged():
        for headers in (
            {},
            bearer("nope"),
            {"Authorization": user},  # no scheme
            {"Authorization": f"Basic {user}"},
            {"Authorization": "Bearer "},
        ):
            response = client.post("/api/posts", json=body, headers=headers)
            assert_error(response, 401, "unauthorized")
            assert response.headers["WWW-Authenticate"] == "Bearer"
