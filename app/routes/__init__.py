"""One blueprint per area of the API, and one for the pages."""

from flask import Flask

from ..auth import admin_required
from ..counters import counters
from . import actions, articles, comments, docs, health, pages, posts, users


def register_blueprints(app: Flask) -> None:
    for module in (users, posts, articles, comments, actions, health, docs, pages):
        app.register_blueprint(module.bp)
    admin = counters.admin_blueprint(auth=admin_required)
    app.register_blueprint(admin, url_prefix="/api/admin/counters")
