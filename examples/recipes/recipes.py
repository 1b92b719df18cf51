"""Recipes: a small Flask + Celery site whose view and heart counters run on counter-engine.

Configured from ``FLASK_*`` environment variables (Flask's ``from_prefixed_env``):
``FLASK_SQLALCHEMY_DATABASE_URI``, ``FLASK_REDIS_URL``, ``FLASK_ADMIN_TOKEN`` (and
``FLASK_SECRET_KEY`` for the dashboard's session cookie), the
engine's ``FLASK_COUNTERS_*`` settings and ``FLASK_CELERY__<celery setting>``.
"""

import hmac
from functools import wraps

import sqlalchemy as sa
from celery import Celery, Task
from flask import Blueprint, Flask, abort, current_app, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.dialects.postgresql import insert
from werkzeug.exceptions import HTTPException, NotFound

from engine import Counter, Registry, TargetMissing, schema
from engine.celery import init_celery
from engine.flask import FlaskCounters

db = SQLAlchemy()
bp = Blueprint("recipes", __name__)


class Recipe(db.Model):
    __tablename__ = "recipes"
    id = sa.Column(sa.BigInteger, primary_key=True)  # bigserial
    title = sa.Column(sa.Text, nullable=False)
    author = sa.Column(sa.Text, nullable=False)
    view_count = sa.Column(sa.BigInteger, nullable=False, server_default="0")
    hearts_count = sa.Column(sa.BigInteger, nullable=False, server_default="0")
    created_at = sa.Column(sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now())


class Heart(db.Model):
    __tablename__ = "hearts"
    recipe_id = sa.Column(sa.ForeignKey("recipes.id", ondelete="CASCADE"), primary_key=True)
    user_name = sa.Column(sa.Text, primary_key=True)


# Codes ("rv", "rh") are stored with every pending delta: never rename or reuse one.
VIEWS = Counter("recipes", "view_count", "rv")  # no recount: views have no source rows
HEARTS_RECOUNT = """SELECT recipe_id, count(*) FROM hearts
    WHERE recipe_id = ANY(CAST(:ids AS bigint[])) GROUP BY recipe_id"""
HEARTS = Counter("recipes", "hearts_count", "rh", recount=HEARTS_RECOUNT)
counters = FlaskCounters(Registry([VIEWS, HEARTS]))


def create_app(test_config: dict | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        SQLALCHEMY_DATABASE_URI="postgresql+psycopg2://postgres@127.0.0.1:5432/recipes",
        REDIS_URL="redis://127.0.0.1:6379/0",  # broker, RedBeat and the counter buffer
        COUNTERS_SCOPE="recipes",
        CELERY={"beat_scheduler": "redbeat.RedBeatScheduler", "redbeat_key_prefix": "rb:recipes:"},
    )
    app.config.from_prefixed_env()
    app.config.from_mapping(test_config or {})
    db.init_app(app)
    counters.init_app(app)
    app.register_blueprint(bp)
    app.register_error_handler(TargetMissing, lambda exc: json_error(NotFound("no such recipe")))
    app.register_blueprint(counters.admin_blueprint(auth=admin_only), url_prefix="/admin/counters")
    app.add_url_rule("/metrics", view_func=counters.metrics_view)
    dashboard = counters.dashboard_blueprint(token=admin_token, views=["recipes.view_count"])
    app.register_blueprint(dashboard, url_prefix="/admin/dashboard")  # needs a SECRET_KEY
    app.cli.command("init-db")(init_db)
    celery_init_app(app)
    return app


def init_db() -> None:
    """Create the site's tables and the engine's ledger (both idempotent)."""
    db.create_all()
    schema.create(db.engine)


def celery_init_app(app: Flask) -> Celery:
    class FlaskTask(Task):
        def __call__(self, *args, **kwargs):
            with app.app_context():
                return self.run(*args, **kwargs)

    celery = Celery(app.name, task_cls=FlaskTask)
    url = app.config["REDIS_URL"]
    celery.config_from_object({"broker_url": url, "redbeat_redis_url": url, **app.config["CELERY"]})
    init_celery(celery, counters, app.config)  # the flush/reconcile tasks and beat entries
    celery.set_default()
    app.extensions["celery"] = celery
    return celery


def admin_token() -> str | None:
    return current_app.config.get("ADMIN_TOKEN")


def admin_only(view):
    @wraps(view)
    def guarded(*args, **kwargs):
        token = current_app.config.get("ADMIN_TOKEN") or ""
        given = request.headers.get("X-Admin-Token", "")
        if not token or not hmac.compare_digest(given.encode(), token.encode()):
            abort(403, "send the admin token in X-Admin-Token")
        return view(*args, **kwargs)

    return guarded


@bp.app_errorhandler(HTTPException)
def json_error(exc):
    return {"error": exc.name.lower().replace(" ", "_"), "message": exc.description}, exc.code


def field(fields, name: str) -> str:
    """A non-empty string from a JSON object or the headers, else a 400."""
    value = fields.get(name) if hasattr(fields, "get") else None
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        abort(400, f"{name} must be a non-empty string")
    return value


@bp.post("/recipes")
def create_recipe():
    data = request.get_json(silent=True)
    recipe = Recipe(title=field(data, "title"), author=field(data, "author"))
    db.session.add(recipe)
    db.session.flush()  # assigns its id
    counters.created("recipes", [recipe.id])  # before the commit: no view of it is refused
    db.session.commit()
    return show_recipe(recipe.id), 201


@bp.get("/recipes/<int:recipe_id>")
def show_recipe(recipe_id: int):
    found = counters.read_rows("recipes", [recipe_id], ("title", "author")).get(recipe_id)
    counts, recipe = found or abort(404, "no such recipe")  # live counts, and the row
    return {"id": recipe_id, **recipe, **counts}


@bp.delete("/recipes/<int:recipe_id>")
def delete_recipe(recipe_id: int):
    # FOR UPDATE: heart writers (FOR KEY SHARE) finish first, or find the recipe gone
    recipe = db.session.get(Recipe, recipe_id, with_for_update=True) or abort(404, "no such recipe")
    if recipe.author != field(request.headers, "X-User"):
        abort(403, "only its author may delete a recipe")
    db.session.delete(recipe)  # its hearts go with it (ON DELETE CASCADE)
    db.session.commit()
    counters.deleted("recipes", [recipe_id])  # after the commit; its pending deltas are dropped
    return "", 204


@bp.post("/recipes/<int:recipe_id>/view")
def view_recipe(recipe_id: int):
    if not counters.view("recipes.view_count", recipe_id):
        abort(404, "no such recipe")
    return "", 204


@bp.post("/recipes/<int:recipe_id>/hearts")
def add_heart(recipe_id: int):
    row = {"recipe_id": recipe_id, "user_name": field(request.headers, "X-User")}
    statement = insert(Heart).values(row).on_conflict_do_nothing().returning(Heart.user_name)
    added = counters.counted_write("recipes.hearts_count", recipe_id, statement, 1)
    return {"hearted": True}, 201 if added is not None else 200


@bp.delete("/recipes/<int:recipe_id>/hearts")
def remove_heart(recipe_id: int):
    where = (Heart.recipe_id == recipe_id, Heart.user_name == field(request.headers, "X-User"))
    statement = sa.delete(Heart).where(*where).returning(Heart.user_name)
    if counters.counted_write("recipes.hearts_count", recipe_id, statement, -1) is None:
        abort(404, "you have not hearted this recipe")
    return "", 204
