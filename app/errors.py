"""Every error the API returns is ``{"error": "<code>", "message": "<text>"}`` JSON,
built by ``error_response``; Flask's own errors and unexpected exceptions included.
Pages for people (any path outside the API and the machine endpoints) get the same
status as an HTML page, built by ``page_error``."""

from __future__ import annotations

import re

import redis.exceptions
import sqlalchemy.exc
from flask import Flask, current_app, jsonify, render_template, request
from werkzeug.exceptions import HTTPException

# Machines read these paths (and what lies under them): their errors stay JSON.
JSON_PATHS = ("/api", "/healthz", "/metrics")


class ApiError(Exception):
    """An error with its HTTP status, raised anywhere in a request and rendered as JSON."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, headers: dict | None = None):
    response = jsonify(error=code, message=message)
    response.status_code = status
    response.headers.update(headers or {})
    return response


def wants_json() -> bool:
    path = request.path
    return any(path == p or path.startswith(p + "/") for p in JSON_PATHS)


def page_error(status: int, title: str, message: str, headers: dict | None = None):
    """An error page for people: the status, a title, a sentence, a way home."""
    html = render_template("error.html", status=status, title=title, message=message)
    return html, status, headers or {}


PAGE_MESSAGES = {
    404: "There is nothing at this address. It may have been deleted, or the link is wrong.",
    405: "This address exists, but not for what your browser asked of it.",
}


def bad_request(message: str, code: str = "bad_request") -> ApiError:
    return ApiError(400, code, message)


def not_found(what: str = "resource") -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _http_error(exc: HTTPException):
    headers = {}
    if getattr(exc, "valid_methods", None):
        headers["Allow"] = ", ".join(exc.valid_methods)
    status = exc.code or 500
    if not wants_json():
        message = PAGE_MESSAGES.get(status, exc.description or exc.name)
        return page_error(status, exc.name, message, headers)
    return error_response(status, _slug(exc.name), exc.description or exc.name, headers)


def _api_error(exc: ApiError):
    return error_response(exc.status, exc.code, exc.message, exc.headers)


def _unavailable(exc: Exception):
    current_app.logger.warning("backend unavailable: %s", exc)
    if not wants_json():
        return page_unavailable()
    return error_response(503, "unavailable", "a backing service is unavailable, retry later")


def page_unavailable():
    message = "A service this page needs is down. Try again in a moment."
    return page_error(503, "Unavailable", message, {"Retry-After": "1"})


def _internal(exc: Exception):
    current_app.logger.exception("unhandled error")
    if not wants_json():
        return page_error(500, "Internal server error", "Something went wrong on our side.")
    return error_response(500, "internal_error", "internal server error")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(ApiError, _api_error)
    # the engine's own outages (BufferUnavailable, StoreUnavailable) are answered by
    # its extension, with the same JSON; these are the site's own queries' outages
    for exc in (
        sqlalchemy.exc.OperationalError,
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
    ):
        app.register_error_handler(exc, _unavailable)
    app.register_error_handler(Exception, _internal)
