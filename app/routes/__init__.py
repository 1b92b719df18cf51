"""One blueprint per area of the API."""

from flask import Flask

from ..auth import admin_required
from ..counters import counters
from . import actions, articles, comments, docs, health, posts, users


def register_blueprints(app: Flask) -> None:
    for module in (users, posts, articles, comments, actions, health, docs):
        app.register_blueprint(module.bp)
    admin = counters.admin_blueprint(auth=admin_required)
    app.register_blueprint(admin, url_prefix="/api/admin/counters")
