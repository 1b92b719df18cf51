"""One blueprint per area of the API."""

from flask import Flask

from . import actions, admin, articles, comments, docs, health, posts, users


def register_blueprints(app: Flask) -> None:
    for module in (users, posts, articles, comments, actions, admin, health, docs):
        app.register_blueprint(module.bp)
