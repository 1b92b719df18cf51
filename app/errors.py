"""Every error the API returns is ``{"error": "<code>", "message": "<text>"}`` JSON,
built by ``error_response``; Flask's own errors and unexpected exceptions included."""

from __future__ import annotations

import re

import redis.exceptions
import sqlalchemy.exc
from flask import Flask, current_app, jsonify
from werkzeug.exceptions import HTTPException


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
    return error_response(exc.code or 500, _slug(exc.name), exc.description or exc.name, headers)


def _api_error(exc: ApiError):
    return error_response(exc.status, exc.code, exc.message, exc.headers)


def _unavailable(exc: Exception):
    current_app.logger.warning("backend unavailable: %s", exc)
    return error_response(503, "unavailable", "a backing service is unavailable, retry later")


def _internal(exc: Exception):
    current_app.logger.exception("unhandled error")
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
