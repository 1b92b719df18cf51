"""The reference Flask app of the counter engine."""

from __future__ import annotations

import os
from pathlib import Path

from dotenv import find_dotenv, load_dotenv
from flask import Flask, request
from flask.helpers import get_load_dotenv
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

from . import config
from .celery_utils import celery_init_app
from .cli import register_cli
from .counters import counters
from .dbpool import ping_when_idle
from .errors import register_error_handlers
from .extensions import db, migrate
from .ids import IdConverter
from .limits import init_limits
from .routes import register_blueprints

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def create_app(test_config: dict | None = None) -> Flask:
    """Config from defaults, then the environment (and ``.env``), then ``test_config``.

    ``.env`` (found from the working directory up; variables already set win) is read
    only without ``test_config``, so a developer's file never leaks into tests, and
    not when ``FLASK_SKIP_DOTENV=1``, as for the ``flask`` command.
    """
    if test_config is None and get_load_dotenv():
        load_dotenv(find_dotenv(usecwd=True))
    app = Flask(__name__)  # templates/ and static/ (the pages) beside this file
    app.config.from_mapping(config.load(os.environ, test_config))
    app.url_map.converters["id"] = IdConverter

    db.init_app(app)
    migrate.init_app(app, db, directory=str(MIGRATIONS_DIR))
    with app.app_context():
        ping_when_idle(db.engine, app.config["DATABASE_PING_IDLE_S"])
    counters.init_app(app)
    hops = app.config["PROXY_HOPS"]
    if hops:  # only then is X-Forwarded-For believed, and only that many hops of it
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)

    register_error_handlers(app)
    app.before_request(_refuse_large_bodies)
    register_blueprints(app)
    init_limits(app)
    register_cli(app)
    celery_init_app(app)
    return app


def _refuse_large_bodies():
    """413 from the declared length, also on endpoints that never read the body."""
    limit = request.max_content_length
    if limit is not None and (request.content_length or 0) > limit:
        raise RequestEntityTooLarge()
