"""/healthz, /metrics, and JSON errors for whatever else."""

from tests.app.conftest import assert_error


def test_healthz_is_ok_with_both_servers_up(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_healthz_is_503_when_redis_is_down(make_app):
    # nothing listens on port 1
    client = make_app(REDIS_URL="redis://127.0.0.1:1/15").test_client()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json["down"] == ["redis"]


def test_healthz_is_503_when_postgres_is_down(make_app):
    client = make_app(DATABASE_URL="postgresql://postgres@127.0.0.1:1/nope").test_client()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json["down"] == ["postgres"]


def test_api_answers_503_json_when_redis_is_down(make_app):
    client = make_app(REDIS_URL="redis://127.0.0.1:1/15").test_client()
    assert_error(client.post("/api/posts/1/view"), 503, "unavailable")


def test_metrics_is_prometheus_text(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert b"# TYPE" in response.data


def test_unknown_api_path_is_404_json(client):
    assert_error(client.get("/api/nope"), 404, "not_found")
    assert_error(client.get("/api/posts/1/nope"), 404)
    assert_error(client.post("/api/users/1"), 404)


def test_wrong_method_elsewhere_is_405_json(client):
    assert_error(client.delete("/api/users"), 405, "method_not_allowed")
    assert_error(client.get("/api/actions"), 405)
    assert_error(client.post("/healthz"), 405)


def test_unexpected_error_is_500_json_without_traceback(app, client):
    @app.get("/api/boom")
    def boom():
        raise RuntimeError("secret detail")

    response = client.get("/api/boom")
    assert_error(response, 500, "internal_error")
    assert b"secret" not in response.data and b"Traceback" not in response.data
