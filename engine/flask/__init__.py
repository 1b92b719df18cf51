"""Flask extension of the engine (``pip install 'counter-engine[flask]'``).

    counters = FlaskCounters(registry)          # module level, no app needed

    def create_app():
        app = Flask(__name__)
        db.init_app(app)                        # Flask-SQLAlchemy, or pass sql=engine
        counters.init_app(app)
        ...

``init_app`` ``setdefault``s every ``COUNTERS_*`` setting (engine.settings), builds the
app's ``engine.Counters`` (stored in ``app.extensions["counters"]``), adds the
``flask counters …`` commands and answers ``BufferUnavailable``/``StoreUnavailable``
with a JSON 503. In a request, CLI command or ``FlaskTask``, ``counters.view(...)``,
``counters.read(...)`` and every other ``engine.Counters`` method act on the current
app's instance. Several apps may share one ``FlaskCounters``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass

import sqlalchemy as sa
from flask import Flask, current_app, jsonify

from .. import settings
from ..clients import redis_client
from ..coalesce import ViewCoalescer
from ..counters import Counters
from ..errors import BufferUnavailable, CounterError, LayoutMismatch, StoreUnavailable
from ..policy import RAW, Visit
from ..registry import Registry
from ..spool import SpooledCoalescer

EXTENSION = "counters"

log = logging.getLogger(__name__)


@dataclass
class State:
    """What ``init_app`` keeps in ``app.extensions["counters"]``."""

    counters: Counters
    coalescer: ViewCoalescer | None = None
    durability: dict | None = None  # what Redis reported at startup (None: unreachable)

    def close(self) -> None:
        if self.coalescer is not None:
            self.coalescer.close()  # pushes what it still holds
        self.counters.close()


def unavailable(exc: Exception):
    """The 503 answer to a backend outage: ``{"error": "unavailable", "message"}``."""
    current_app.logger.warning("counter backend unavailable: %s", exc)
    response = jsonify(error="unavailable", message="a backing service is unavailable, retry later")
    response.status_code = 503
    response.headers["Retry-After"] = "1"
    return response


class FlaskCounters:
    def __init__(
        self,
        registry: Registry,
        app: Flask | None = None,
        *,
        sql: sa.Engine | Callable[[], sa.Engine] | None = None,
    ) -> None:
        self.registry = registry
        self.sql = sql
        if app is not None:
            self.init_app(app)

    def init_app(
        self,
        app: Flask,
        *,
        sql: sa.Engine | Callable[[], sa.Engine] | None = None,
        redis=None,
        error_handlers: bool = True,
        **options,
    ) -> None:
        """Bind the engine to ``app``.

        ``sql`` is a SQLAlchemy engine, or a function returning one, called in the app
        context (default: Flask-SQLAlchemy's ``db.engine``). ``redis`` is the counter
        client (default: built from COUNTERS_REDIS_URL, else REDIS_URL, by
        ``engine.clients.redis_client``, with COUNTERS_REDIS_CLUSTER). Other keyword
        arguments go to ``engine.Counters`` (``hook``, ``flush_lock_ttl_ms``).
        """
        for key, value in settings.defaults().items():
            app.config.setdefault(key, value)
        settings.validate(app.config)
        with app.app_context():
            engine = self._sql_engine(sql if sql is not None else self.sql)
        if redis is None:
            url = app.config["COUNTERS_REDIS_URL"] or app.config.get("REDIS_URL")
            if not url:
                raise RuntimeError("set COUNTERS_REDIS_URL (or REDIS_URL) for the counters")
            redis = redis_client(url, cluster=app.config["COUNTERS_REDIS_CLUSTER"])
        counters = Counters(
            redis,
            engine,
            self.registry,
            shards=app.config["COUNTERS_SHARDS"],
            scope=str(app.config["COUNTERS_SCOPE"]),  # from_prefixed_env may give a number
            flush_threads=app.config["COUNTERS_FLUSH_THREADS"],
            view_policy=app.config["COUNTERS_VIEW_POLICY"],
            view_window_s=app.config["COUNTERS_VIEW_WINDOW_S"],
            read_model_ttl_s=app.config["COUNTERS_READ_MODEL_TTL_S"],
            **options,
        )
        durability = self._check_durability(app, counters)
        self._check_layout(counters)
        coalescer = None
        interval_s = app.config["COUNTERS_COALESCE_MS"] / 1000
        if app.config["COUNTERS_COALESCE_SPOOL_DIR"]:
            coalescer = SpooledCoalescer(
                counters, interval_s, app.config["COUNTERS_COALESCE_SPOOL_DIR"]
            )
        elif interval_s > 0:
            coalescer = ViewCoalescer(counters, interval_s)
        app.extensions[EXTENSION] = State(counters, coalescer, durability)
        from .cli import counters_cli

        app.cli.add_command(counters_cli)
        from .visitors import init_visitors

        init_visitors(app)
        if error_handlers:
            for exc in (BufferUnavailable, StoreUnavailable):
                app.register_error_handler(exc, unavailable)

    @staticmethod
    def _check_durability(app: Flask, counters: Counters) -> dict | None:
        """Log what the buffer's Redis keeps across a crash; refuse to start (UnsafeRedis)
        when it may evict pending deltas, unless COUNTERS_ALLOW_EVICTION. A Redis that
        cannot be reached now is not a reason to refuse: the requests will say so."""
        try:
            found = counters.check_durability(app.config["COUNTERS_ALLOW_EVICTION"])
        except BufferUnavailable as exc:
            log.warning("counter buffer unreachable at startup, durability unknown: %s", exc)
            return None
        log.info(
            "%s", json.dumps({"event": "counter_durability", "scope": counters.scope, **found})
        )
        if not found["aof"]:
            log.warning(
                "the counter buffer's Redis has no append-only file: a crash loses the "
                "deltas since its last snapshot (docs/operations.md)"
            )
        return found

    @staticmethod
    def _check_layout(counters: Counters) -> None:
        """Refuse to start (LayoutMismatch) with another COUNTERS_SHARDS than the one the
        scope records: this process would count on shards no flush reads. Unreachable
        servers are no reason to refuse: every increment checks the layout anyway."""
        try:
            counters.check_layout()
        except LayoutMismatch:
            raise
        except CounterError as exc:
            log.warning("shard layout not checked at startup: %s", exc)

    def health(self) -> dict:
        """``{"redis": "ok"|"down", "durability": startup report}`` of the current app's
        buffer (one PING)."""
        state = self.state()
        try:
            state.counters.ping()
            up = "ok"
        except BufferUnavailable:
            up = "down"
        return {"redis": up, "durability": state.durability}

    @staticmethod
    def _sql_engine(sql) -> sa.Engine:
        if isinstance(sql, sa.Engine):
            return sql
        if sql is not None:
            return sql()
        ext = current_app.extensions.get("sqlalchemy")
        if ext is None:
            raise RuntimeError("pass sql= (an engine) or init Flask-SQLAlchemy before counters")
        return ext.engine

    # -- the current app's engine ---------------------------------------------------

    @staticmethod
    def state(app: Flask | None = None) -> State:
        return (app or current_app).extensions[EXTENSION]

    def get(self, app: Flask | None = None) -> Counters:
        """The ``engine.Counters`` of ``app`` (default: the current app)."""
        return self.state(app).counters

    def view(self, name: str, row_id: int, visit: Visit | None = None) -> bool:
        """Count one view of an existing row (``Counters.view``), under its view policy
        given ``visit`` (see :func:`engine.flask.visitors.visit`); with
        COUNTERS_COALESCE_MS set, views without a policy to apply are tallied in this
        process and pushed in batches (a policy decides per view, in Redis)."""
        state = self.state()
        counters = state.counters
        if state.coalescer is not None and (
            visit is None
            or counters.view_policy == RAW
            or counters.registry.get(name).policy is None
        ):
            return state.coalescer.count(name, row_id)
        return counters.view(name, row_id, visit=visit)

    def counted_write(self, name, target_id, statement, delta, *, session=None):
        """``Counters.counted_write`` in ``session`` (default: Flask-SQLAlchemy's)."""
        if session is None:
            session = current_app.extensions["sqlalchemy"].session
        return self.get().counted_write(name, target_id, statement, delta, session=session)

    def __getattr__(self, name: str):
        # every other public Counters method, on the current app's instance
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.get(), name)

    # -- optional pieces --------------------------------------------------------------

    def admin_blueprint(self, auth: Callable | None = None, **options):
        """Flush, reconcile, stats and schedule endpoints (engine.flask.admin); ``auth``
        decorates every view (say, an admin-token check). Register it with a prefix."""
        from .admin import admin_blueprint

        return admin_blueprint(auth, **options)

    def dashboard_blueprint(self, token: Callable[[], str | None], **options):
        """The operators' dashboard page (engine.flask.dashboard): charts of the last hour
        and the last flushes and reconciles, behind ``token()`` (the admin token, entered
        once in a form; then a signed session cookie). Register it with a prefix."""
        from .dashboard import dashboard_blueprint

        return dashboard_blueprint(token, **options)

    def metrics_view(self):
        """A view function serving the Prometheus text of the current app's engine."""
        from ..prometheus import CONTENT_TYPE, exposition

        return current_app.response_class(exposition(self.get()), content_type=CONTENT_TYPE)
