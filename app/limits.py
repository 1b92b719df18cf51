"""Abuse limits (Flask-Limiter, counted in Redis so every web process shares them).

Sign-up is limited per client address, actions and comments per user (the bearer
token's hash: no query needed to key the limit). A refused request gets a JSON 429 with
``Retry-After``. Views are never limited here: the counting policy decides what a view
is worth. ``RATELIMIT_ENABLED=0`` (the library's own setting) turns the limits off, for
load tests and benchmarks. Behind a reverse proxy the client address is the one the
configured number of trusted proxies (``PROXY_HOPS``) reports, never a header any
client could set.

Each app gets its own ``Limiter`` (the library keeps its settings per instance), which
wraps the limited endpoints once they are registered.
"""

from __future__ import annotations

from flask import Flask, request
from flask_limiter import Limiter

from .auth import bearer_token, hash_token


def client_address() -> str:
    return request.remote_addr or "unknown"


def user_or_address() -> str:
    token = bearer_token()
    return f"user:{hash_token(token)}" if token else f"addr:{client_address()}"


# endpoint -> (config key of its limit, budget shared by the endpoints named alike, key)
LIMITED = {
    "users.create": ("LIMIT_SIGNUP", "signup", client_address),
    "actions.create": ("LIMIT_ACTIONS", "actions", user_or_address),
    "actions.delete": ("LIMIT_ACTIONS", "actions", user_or_address),
    "posts.comment": ("LIMIT_COMMENTS", "comments", user_or_address),
    "articles.comment": ("LIMIT_COMMENTS", "comments", user_or_address),
}


def init_limits(app: Flask) -> Limiter:
    """Limit the endpoints of ``LIMITED`` (call after the blueprints are registered)."""
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config["REDIS_URL"])
    app.config.setdefault("RATELIMIT_KEY_PREFIX", f"limits:{app.config['COUNTERS_SCOPE']}")
    limiter = Limiter(key_func=client_address, headers_enabled=True, swallow_errors=True)
    limiter.init_app(app)
    app.extensions["abuse_limiter"] = limiter  # the wrapped views hold it weakly
    wrapped: dict = {}  # posts and articles share one view function: wrap it once
    for endpoint, (setting, scope, key_func) in LIMITED.items():
        view = app.view_functions[endpoint]
        if view not in wrapped:
            limit = limiter.shared_limit(app.config[setting], scope=scope, key_func=key_func)
            wrapped[view] = limit(view)
        app.view_functions[endpoint] = wrapped[view]
    return limiter
