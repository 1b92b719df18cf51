"""One blueprint per area of the API, and one for the pages."""

from flask import Flask, current_app

from ..auth import admin_required
from ..counters import counters
from . import actions, articles, comments, docs, health, pages, posts, users

# what the dashboard's first chart adds up as views
VIEW_COUNTERS = ("posts.view_count", "articles.view_count")


def register_blueprints(app: Flask) -> None:
    for module in (users, posts, articles, comments, actions, health, docs, pages):
        app.register_blueprint(module.bp)
    admin = counters.admin_blueprint(auth=admin_required)
    app.register_blueprint(admin, url_prefix="/api/admin/counters")
    dashboard = counters.dashboard_blueprint(
        token=lambda: current_app.config.get("ADMIN_TOKEN"),
        views=VIEW_COUNTERS,
        home_url="/",
    )
    app.register_blueprint(dashboard, url_prefix="/admin/dashboard")
