"""/admin/dashboard over HTTP: the admin token entered once in a form, then a signed
session cookie; the data the page polls; disabled (404) without ADMIN_TOKEN."""

from __future__ import annotations

import pytest

from tests.app.conftest import ADMIN_TOKEN, act, assert_error, bearer, create

PAGE = "/admin/dashboard"
DATA = "/admin/dashboard/data"
SIGN_OUT = "/admin/dashboard/sign-out"


def sign_in(client, token: str = ADMIN_TOKEN):
    return client.post(PAGE, data={"token": token})


def cookie_header(response) -> str:
    (header,) = response.headers.getlist("Set-Cookie")
    return header


def test_without_the_session_the_page_is_the_form_and_the_data_is_refused(client):
    page = client.get(PAGE)
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert 'method="post"' in html and 'type="password"' in html and 'name="token"' in html
    assert "data-dashboard" not in html  # no charts, no data URL
    assert "no-store" in page.headers["Cache-Control"]
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]  # no inline code
    assert_error(client.get(DATA), 401, "unauthorized")


def test_the_admin_bearer_token_does_not_open_the_dashboard_data(client):
    assert_error(client.get(DATA, headers=bearer(ADMIN_TOKEN)), 401, "unauthorized")
    assert_error(client.get(f"{DATA}?token={ADMIN_TOKEN}"), 401, "unauthorized")


WRONG = ["wrong", "", ADMIN_TOKEN + "x", ADMIN_TOKEN[:-1], "%FF%FE", "é", "other=1"]


@pytest.mark.parametrize("body", [f"token={w}" for w in WRONG[:-1]] + WRONG[-1:])
def test_a_wrong_token_gets_the_form_again_with_a_401_and_no_cookie(client, body):
    response = client.post(PAGE, data=body, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 401 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert "not the admin token" in html and 'name="token"' in html
    assert "Set-Cookie" not in response.headers
    assert_error(client.get(DATA), 401)


def test_the_token_gives_a_signed_httponly_lax_cookie_and_never_lands_in_a_url(client):
    response = sign_in(client)
    assert response.status_code == 303
    assert response.headers["Location"] == PAGE  # no token, no query string
    cookie = cookie_header(response)
    assert cookie.startswith("session=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert ADMIN_TOKEN not in cookie
    page = client.get(PAGE)
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert ADMIN_TOKEN not in html
    assert f'data-url="{DATA}"' in html and html.count("data-chart=") == 3
    data = client.get(DATA)
    assert data.status_code == 200 and data.mimetype == "application/json"
    assert set(data.json["series"]) == {"t", "views", "pending", "lag_s"}
    assert ADMIN_TOKEN not in data.get_data(as_text=True)


def test_the_data_shows_views_pending_counters_and_the_last_runs(client, user, counters):
    assert sign_in(client).status_code == 303
    client.get(DATA)  # this minute's sample, before the views
    post = create(client, user)
    for _ in range(4):
        assert client.post(f"/api/posts/{post}/view").status_code == 204
    act(client, user, "like", "post", post)  # an increment, not a view
    data = client.get(DATA).json
    series = data["series"]
    assert len(series["t"]) == len(series["views"]) == len(series["pending"]) >= 1
    assert series["views"][-1] == 4  # since the first read's sample, whatever the minute
    assert series["pending"][-1] == data["pending"] == 2
    assert series["lag_s"][-1] >= 0
    assert data["flushes"] == [] and data["reconciles"] == []
    counters.flush_all()
    counters.reconcile()
    data = client.get(DATA).json
    assert data["pending"] == 0 and data["series"]["lag_s"][-1] == 0
    assert [f["flushed"] for f in data["flushes"]] == [2]
    assert data["reconciles"][0]["checked"] > 0
    assert data["totals"]["counters_applied"] == 2


def test_sign_out_forgets_the_session(client):
    sign_in(client)
    response = client.post(SIGN_OUT)
    assert response.status_code == 303 and response.headers["Location"] == PAGE
    assert_error(client.get(DATA), 401)
    assert 'name="token"' in client.get(PAGE).get_data(as_text=True)


def test_a_new_admin_token_signs_every_browser_out(app, client):
    sign_in(client)
    assert client.get(DATA).status_code == 200
    app.config["ADMIN_TOKEN"] = "a-new-token"  # SECRET_KEY unchanged: the cookie verifies
    assert_error(client.get(DATA), 401)


def test_a_sign_in_older_than_the_session_max_age_is_refused(client):
    sign_in(client)
    with client.session_transaction() as kept:
        (key,) = kept.keys()  # the cookie, still validly signed, says it began 20 days ago
        kept[key] = {**kept[key], "at": kept[key]["at"] - 20 * 86_400}
    assert_error(client.get(DATA), 401)
    assert 'name="token"' in client.get(PAGE).get_data(as_text=True)


def test_a_cookie_signed_with_another_key_is_refused(make_app, client):
    other = make_app(SECRET_KEY="another-site-secret").test_client()
    response = sign_in(other)
    cookie = cookie_header(response).split(";")[0].split("=", 1)[1]
    client.set_cookie("session", cookie)
    assert_error(client.get(DATA), 401)


def test_without_admin_token_the_dashboard_is_a_404(make_app):
    client = make_app(ADMIN_TOKEN=None).test_client()
    page = client.get(PAGE)
    assert page.status_code == 404 and page.mimetype == "text/html"
    assert "Not Found" in page.get_data(as_text=True)
    assert sign_in(client, "anything").status_code == 404
    assert client.post(SIGN_OUT).status_code == 404
    assert_error(client.get(DATA), 404, "not_found")


def test_the_home_page_links_to_the_dashboard(client):
    assert f'href="{PAGE}"' in client.get("/").get_data(as_text=True)


def test_without_redis_the_data_is_a_json_503_and_the_page_still_answers(make_app):
    client = make_app(REDIS_URL="redis://127.0.0.1:1/0").test_client()
    assert sign_in(client).status_code == 303  # the session needs no Redis
    assert client.get(PAGE).status_code == 200
    assert_error(client.get(DATA), 503, "unavailable")
