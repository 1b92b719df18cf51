"""/api/openapi.json documents every route, and the API keeps to it under generated input."""

import re

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode

from tests.app.conftest import assert_error, bearer, comment, create, new_user

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def documented(client) -> set[tuple[str, str]]:
    paths = client.get("/api/openapi.json").json["paths"]
    return {
        (path, method.upper())
        for path, ops in paths.items()
        for method in ops
        if method != "parameters"
    }


def is_page(rule) -> bool:
    """Pages for people (HTML) and their static files are no part of the API document;
    nor is the operators' dashboard (a page and the data it polls, under its session)."""
    return rule.endpoint == "static" or rule.endpoint.startswith(("pages.", "counters_dashboard."))


def test_every_route_is_documented_and_every_documented_route_exists(app, client):
    routes = set()
    for rule in app.url_map.iter_rules():
        if is_page(rule):
            continue
        path = re.sub(r"<(?:id:)?(\w+)>", r"{\1}", rule.rule)
        path = path.replace("{row_id}", "{id}").replace("{target_id}", "{id}")
        routes |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented(client) == routes


def test_document_is_openapi_3(client):
    response = client.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.json["openapi"].startswith("3.")
    schemathesis.openapi.from_dict(response.json)  # refuses an invalid document


@pytest.fixture
def seeded(client, user):
    """A few rows of each kind, so generated small ids often exist."""
    bob = new_user(client, "bob")
    for kind in ("posts", "articles"):
        for _ in range(3):
            parent = create(client, user, kind)
            comment(client, bob, kind, parent)
    return user


def fuzz(operation, mode: GenerationMode, headers: dict) -> None:
    @settings(max_examples=6, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(mode))
    def run(case):
        response = case.call(headers=headers)
        if response.status_code >= 400 and case.path.startswith("/api"):
            assert set(response.json()) == {"error", "message"}, response.text
        case.validate_response(response, checks=CHECKS)

    run()


@pytest.mark.parametrize("mode", list(GenerationMode))
def test_generated_requests_get_documented_answers_and_never_a_500(app, seeded, mode):
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        try:
            fuzz(operation, mode, bearer(seeded))
        except Unsatisfiable:  # nothing to get wrong: no parameters and no body
            assert mode is GenerationMode.NEGATIVE
        except Exception as exc:  # report every operation's failure at once
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)


def test_openapi_is_not_an_error_path(client):
    assert_error(client.post("/api/openapi.json"), 405)
