"""Bearer tokens: users get one at creation; only its sha256 is stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from functools import wraps

import sqlalchemy as sa
from flask import current_app, g, request

from .errors import ApiError
from .extensions import db
from .models import User

TOKEN_BYTES = 32


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def bearer_token() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, {"WWW-Authenticate": "Bearer"})


def user_required(view):
    """Set ``g.user_id`` from the bearer token (one indexed query), or answer 401."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        token = bearer_token()
        if token is None:
            raise unauthorized("missing bearer token")
        user_id = db.session.scalar(sa.select(User.id).where(User.token_hash == hash_token(token)))
        if user_id is None:
            raise unauthorized("invalid token")
        g.user_id = user_id
        return view(*args, **kwargs)

    return wrapper


def admin_required(view):
    """Admin endpoints take ``ADMIN_TOKEN``; with it unset they are disabled (403)."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        expected = current_app.config.get("ADMIN_TOKEN")
        if not expected:
            raise ApiError(403, "admin_disabled", "admin endpoints are disabled (no ADMIN_TOKEN)")
        token = bearer_token()
        if token is None:
            raise unauthorized("missing bearer token")
        if not hmac.compare_digest(token.encode("utf-8", "surrogatepass"), expected.encode()):
            raise unauthorized("invalid admin token")
        return view(*args, **kwargs)

    return wrapper
