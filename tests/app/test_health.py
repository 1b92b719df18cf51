"""/healthz, /metrics, the durability the buffer's Redis reports, and JSON errors for
whatever else."""

import json
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from engine import UnsafeRedis
from harness.redis_server import RedisProcess
from tests.app.conftest import REDIS_DB, assert_error
from tests.servers import redis_server_binary


def test_healthz_is_ok_with_both_servers_up(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json["status"] == "ok"
    (node,) = response.json["durability"]["nodes"]  # the test Redis keeps nothing on disk
    assert node["aof"] is False and response.json["durability"]["evicts"] is False


@pytest.fixture
def evicting_redis(tmp_path):
    """A redis-server of this test's own whose maxmemory-policy may evict any key."""
    server = RedisProcess(
        redis_server_binary(), tmp_path, ["--save", "", "--maxmemory-policy", "allkeys-lru"]
    )
    server.start()
    yield f"redis://127.0.0.1:{server.port}/{REDIS_DB}"
    server.stop()


def test_an_app_refuses_to_start_on_a_redis_that_may_evict_its_deltas(make_app, evicting_redis):
    with pytest.raises(UnsafeRedis, match="allkeys-lru"):
        make_app(COUNTERS_REDIS_URL=evicting_redis)


def test_allowed_eviction_starts_and_is_reported(make_app, evicting_redis, caplog):
    with caplog.at_level(logging.INFO, logger="engine.flask"):
        app = make_app(COUNTERS_REDIS_URL=evicting_redis, COUNTERS_ALLOW_EVICTION=True)
    (line,) = [r.getMessage() for r in caplog.records if "counter_durability" in r.getMessage()]
    assert json.loads(line)["evicts"] is True
    client = app.test_client()
    assert client.get("/healthz").json["durability"]["evicts"] is True
    metrics = {
        (s.name, s.labels.get("maxmemory_policy")): s.value
        for f in text_string_to_metric_families(client.get("/metrics").data.decode())
        for s in f.samples
    }
    assert metrics[("counter_redis_may_evict", None)] == 1
    assert metrics[("counter_redis_aof_enabled", None)] == 0
    assert metrics[("counter_redis_info", "allkeys-lru")] == 1


def test_healthz_is_503_when_redis_is_down(make_app):
    # nothing listens on port 1
    client = make_app(REDIS_URL="redis://127.0.0.1:1/15").test_client()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json["down"] == ["redis"]
    assert response.json["durability"] is None  # unknown: unreachable at startup


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
