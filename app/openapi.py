"""The OpenAPI 3 document of the API, served at ``/api/openapi.json``."""

from __future__ import annotations

from engine import TRENDING_WINDOWS, WINDOWS
from engine.intervals import BOUNDS_S

from .actions import ACTIONS, TARGETS
from .ids import MAX_ID
from .kinds import COUNT_COLUMNS, KINDS, Kind
from .routes.content import (
    COMMENT_CHARS,
    CONTENT_CHARS,
    DEFAULT_WINDOW,
    PAGE_LIMIT,
    TITLE_CHARS,
    TRENDING_LIMIT,
    TRENDING_LIMIT_DEFAULT,
)

ID = {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_ID}
TIME = {"type": "string", "format": "date-time"}
COUNT = {"type": "integer", "format": "int64"}
SECONDS = {"type": "number"}
USER = [{"bearer": []}]
ADMIN = [{"adminBearer": []}]


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(properties: dict, required: list[str] | None = None) -> dict:
    required = list(properties) if required is None else required
    return {"type": "object", "properties": properties, "required": required}


def body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def ok(description: str, schema: dict | None = None) -> dict:
    if schema is None:
        return {"description": description}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {
    400: "invalid input",
    401: "missing or bad token",
    403: "not allowed",
    404: "not found (also: an id that is not 1..2**63-1)",
    409: "username taken",
    413: "body over 1 MiB",
    429: "too many requests: wait Retry-After seconds (abuse limits)",
    503: "Redis or Postgres unavailable",
}


def errors(*statuses: int) -> dict:
    """Error responses: all ``{"error", "message"}`` JSON."""
    return {str(s): ok(ERRORS[s], ref("Error")) for s in statuses}


def path_id(name: str = "id") -> dict:
    return {"name": name, "in": "path", "required": True, "schema": ID}


def path_enum(name: str, values: list[str]) -> dict:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": {"type": "string", "enum": values},
    }


VIEW_POLICY = (
    "The view policy (COUNTERS_VIEW_POLICY=dedupe) decides whether the view counts: a "
    "visitor (the bearer token's user, else the `vid` cookie, which the answer sets when "
    "absent, else the client address and User-Agent) counts once per "
    "COUNTERS_VIEW_WINDOW_S, a crawler's User-Agent counts into `bot_view_count`, the "
    "author's own views not at all; the answer is the same either way. An invalid bearer "
    "token is a 401. With COUNTERS_VIEW_POLICY=raw every view counts."
)


def op(summary: str, responses: dict, **extra) -> dict:
    return {"summary": summary, "responses": responses, **extra}


def window_param(names: list[str]) -> dict:
    return {
        "name": "window",
        "in": "query",
        "schema": {"type": "string", "enum": names, "default": DEFAULT_WINDOW},
    }


def content_paths(kind: Kind) -> dict:
    base = f"/api/{kind.table}"
    item = "Post" if kind.target_type == "post" else "Article"
    comment = "PostComment" if kind.target_type == "post" else "Comment"
    one = [path_id()]
    return {
        base: {
            "post": op(
                f"Create a {kind.target_type}",
                {"201": ok("created", ref(item)), **errors(400, 401, 413)},
                security=USER,
                requestBody=body(ref("NewItem")),
            ),
            "get": op(
                f"List {kind.table}, newest first, with live counts",
                {"200": ok("a page", ref(f"{item}Page")), **errors(400)},
                parameters=[
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": PAGE_LIMIT[0],
                            "maximum": PAGE_LIMIT[1],
                            "default": 20,
                        },
                    },
                    {"name": "after", "in": "query", "schema": ID},
                ],
            ),
        },
        f"{base}/{{id}}": {
            "parameters": one,
            "get": op(
                f"Read a {kind.target_type}; counts one view, included in its counts",
                {"200": ok("found", ref(item)), **errors(401, 404)},
                description=VIEW_POLICY,
            ),
            "patch": op(
                f"Edit a {kind.target_type}'s title and/or content (its author only); "
                "answers it with its live counts, counting no view",
                {"200": ok("edited", ref(item)), **errors(400, 401, 403, 404, 413)},
                security=USER,
                requestBody=body(ref("ItemEdit")),
            ),
            "delete": op(
                f"Delete a {kind.target_type} (its author only)",
                {"204": ok("deleted"), **errors(401, 403, 404)},
                security=USER,
            ),
        },
        f"{base}/trending": {
            "get": op(
                f"The most viewed {kind.table} of the window (unflushed views included), "
                "most first, then newest; only those with views in it",
                {"200": ok("the ranking", ref(f"{item}Trending")), **errors(400)},
                parameters=[
                    window_param(list(TRENDING_WINDOWS)),
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": TRENDING_LIMIT[0],
                            "maximum": TRENDING_LIMIT[1],
                            "default": TRENDING_LIMIT_DEFAULT,
                        },
                    },
                ],
            )
        },
        f"{base}/{{id}}/stats": {
            "parameters": one,
            "get": op(
                "Views per hour (24h, 7d) or per UTC day (30d), oldest first, empty buckets "
                "included, unflushed views included; counts no view",
                {"200": ok("the series", ref("Series")), **errors(400, 404)},
                parameters=[window_param(list(WINDOWS))],
            ),
        },
        f"{base}/{{id}}/view": {
            "parameters": one,
            "post": op(
                "Count one view",
                {"204": ok("counted"), **errors(401, 404, 413)},
                description=VIEW_POLICY,
            ),
        },
        f"{base}/{{id}}/counts": {
            "parameters": one,
            "get": op(
                "Live counts, counting no view", {"200": ok("counts", ref("Counts")), **errors(404)}
            ),
        },
        f"{base}/{{id}}/comments": {
            "parameters": one,
            "post": op(
                f"Comment on a {kind.target_type}; bumps its comments_count",
                {"201": ok("created", ref(comment)), **errors(400, 401, 404, 413, 429)},
                security=USER,
                requestBody=body(ref("NewComment")),
            ),
        },
    }


def likes_path(summary: str) -> dict:
    return {
        "parameters": [path_id()],
        "get": op(summary, {"200": ok("counts", ref("Likes")), **errors(404)}),
    }


def schemas() -> dict:
    item_fields = {
        "title": {"type": "string", "minLength": TITLE_CHARS[0], "maxLength": TITLE_CHARS[1]},
        "content": {
            "type": "string",
            "minLength": CONTENT_CHARS[0],
            "maxLength": CONTENT_CHARS[1],
        },
    }

    def item() -> dict:
        return obj(
            {
                "id": ID,
                "title": {"type": "string"},
                "content": {"type": "string"},
                "author_id": ID,
                "created_at": TIME,
                "counts": ref("Counts"),
            }
        )

    def comment(parent: str) -> dict:
        return obj(
            {
                "id": ID,
                parent: ID,
                "author_id": ID,
                "content": {"type": "string"},
                "created_at": TIME,
                "likes_count": COUNT,
            }
        )

    def page(name: str) -> dict:
        return obj(
            {"items": {"type": "array", "items": ref(name)}, "next": {**ID, "nullable": True}}
        )

    def trending(name: str) -> dict:
        ranked = {"allOf": [ref(name), obj({"window_views": COUNT})]}
        return obj(
            {
                "window": {"type": "string", "enum": list(TRENDING_WINDOWS)},
                "items": {"type": "array", "items": ranked},
            }
        )

    text = {"type": "string"}
    return {
        "Error": obj({"error": text, "message": text}),
        "Counts": obj(dict.fromkeys(COUNT_COLUMNS, COUNT)),
        "Likes": obj({"likes_count": COUNT}),
        "Post": item(),
        "Article": item(),
        "PostPage": page("Post"),
        "ArticlePage": page("Article"),
        "PostTrending": trending("Post"),
        "ArticleTrending": trending("Article"),
        "Series": obj(
            {
                "id": ID,
                "window": {"type": "string", "enum": list(WINDOWS)},
                "step": {"type": "string", "enum": ["hour", "day"]},
                "views": COUNT,
                "series": {
                    "type": "array",
                    "items": obj({"start": TIME, "views": COUNT}),
                },
            }
        ),
        "PostComment": comment("post_id"),
        "Comment": comment("article_id"),
        "NewItem": obj(item_fields),
        "ItemEdit": {**obj(item_fields, []), "minProperties": 1, "additionalProperties": False},
        "NewComment": obj(
            {
                "content": {
                    "type": "string",
                    "minLength": COMMENT_CHARS[0],
                    "maxLength": COMMENT_CHARS[1],
                }
            }
        ),
        "NewUser": obj({"username": {"type": "string", "pattern": "^[A-Za-z0-9_]{3,32}$"}}),
        "User": obj({"id": ID, "username": text, "token": text}),
        "Action": obj(
            {
                "action_type": {"type": "string", "enum": list(ACTIONS)},
                "target_type": {"type": "string", "enum": list(TARGETS)},
                "target_id": ID,
            }
        ),
        "Flush": {"type": "object", "properties": {"flushed": COUNT}, "required": ["flushed"]},
        "Reconcile": {
            "type": "object",
            "properties": {"checked": COUNT, "fixed": COUNT},
            "required": ["checked", "fixed"],
        },
        "Stats": {
            "type": "object",
            "properties": {
                "pending": {**COUNT, "description": "counters not yet in Postgres, inflight too"},
                "inflight": COUNT,
                "oldest_pending_age_s": {**SECONDS, "nullable": True},
                "shards": {"type": "array", "items": ref("ShardBacklog")},
                "last_flush": {"type": "object", "nullable": True},
                "last_reconcile": {"type": "object", "nullable": True},
                "flush_batch_duration": {"type": "object"},
                "totals": {"type": "object", "additionalProperties": COUNT},
                "accepted": {
                    "type": "object",
                    "additionalProperties": COUNT,
                    "description": "increments accepted per counter (table.column)",
                },
            },
            "required": ["pending", "inflight", "shards", "totals"],
        },
        "ShardBacklog": obj(
            {
                "shard": {"type": "integer"},
                "pending": COUNT,
                "inflight": COUNT,
                "inflight_seq": {**COUNT, "nullable": True},
                "oldest_ms": {**COUNT, "nullable": True},
                "oldest_age_s": {**SECONDS, "nullable": True},
            }
        ),
        "Schedule": obj(
            {
                "flush_interval": SECONDS,
                "reconcile_interval": SECONDS,
                "entries": {"type": "array", "items": ref("ScheduleEntry")},
            }
        ),
        "ScheduleEntry": obj(
            {
                "name": text,
                "kind": {"type": "string", "enum": ["flush", "reconcile"]},
                "source": {"type": "string", "enum": ["config", "runtime"]},
                "configured_interval_s": SECONDS,
                "in_redis": {"type": "boolean"},
                "task": {**text, "nullable": True},
                "interval_s": {**SECONDS, "nullable": True},
                "expires_s": {**SECONDS, "nullable": True},
                "enabled": {"type": "boolean", "nullable": True},
                "last_run_at": {**TIME, "nullable": True},
                "next_run_at": {**TIME, "nullable": True},
                "total_run_count": COUNT,
            }
        ),
        "ScheduleChange": {
            "type": "object",
            "properties": {
                f"{kind}_interval": {
                    "type": "number",
                    "minimum": low,
                    "maximum": high,
                    "description": f"seconds between two {kind} runs",
                }
                for kind, (low, high) in BOUNDS_S.items()
            },
            "additionalProperties": False,
            "minProperties": 1,
        },
        "Health": {"type": "object", "properties": {"status": text}, "required": ["status"]},
    }


def document() -> dict:
    paths: dict = {
        "/api/users": {
            "post": op(
                "Create a user; the token is shown only here",
                {"201": ok("created", ref("User")), **errors(400, 409, 413, 429)},
                requestBody=body(ref("NewUser")),
            )
        }
    }
    for kind in KINDS:
        paths.update(content_paths(kind))
    paths["/api/post-comments/{id}/counts"] = likes_path("Live likes of a post comment")
    paths["/api/comments/{id}/counts"] = likes_path("Live likes of an article comment")
    paths["/api/actions"] = {
        "post": op(
            "Like, collect or share (like only, for comments)",
            {
                "201": ok("recorded", ref("Action")),
                "200": ok("a like or collect that was already there", ref("Action")),
                **errors(400, 401, 404, 413, 429),
            },
            security=USER,
            requestBody=body(ref("Action")),
        )
    }
    paths["/api/actions/{action_type}/{target_type}/{id}"] = {
        "parameters": [
            path_enum("action_type", ["like", "collect"]),
            path_enum("target_type", list(TARGETS)),
            path_id(),
        ],
        "delete": op(
            "Undo a like or collect (a share cannot be undone: 400)",
            {"204": ok("removed"), **errors(400, 401, 404, 429)},
            security=USER,
        ),
    }
    for name, method, schema, summary in (
        ("flush", "post", "Flush", "Flush every shard now"),
        ("reconcile", "post", "Reconcile", "Exact recount of every counter"),
        ("stats", "get", "Stats", "Pending counters, flush lag, last flush and reconcile"),
    ):
        paths[f"/api/admin/counters/{name}"] = {
            method: op(
                summary,
                {"200": ok("done", ref(schema)), **errors(401, 403, 503)},
                security=ADMIN,
            )
        }
    paths["/api/admin/counters/schedule"] = {
        "get": op(
            "The RedBeat flush and reconcile entries: interval, next run",
            {"200": ok("the schedule", ref("Schedule")), **errors(401, 403, 503)},
            security=ADMIN,
        ),
        "put": op(
            "Change the flush and/or reconcile interval; a running beat follows, "
            "and the change survives a beat restart",
            {"200": ok("the new schedule", ref("Schedule")), **errors(400, 401, 403, 413, 503)},
            security=ADMIN,
            requestBody=body(ref("ScheduleChange")),
        ),
    }
    paths["/healthz"] = {
        "get": op(
            "Redis and Postgres reachable",
            {"200": ok("up", ref("Health")), "503": ok("down", ref("Health"))},
        )
    }
    paths["/metrics"] = {
        "get": op(
            "Prometheus metrics of the engine, read from Redis: the same in every process "
            "(counter_buffer_up 0 when Redis is down)",
            {
                "200": {
                    "description": "text",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        )
    }
    paths["/api/openapi.json"] = {
        "get": op("This document", {"200": ok("OpenAPI 3", {"type": "object"})})
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "Counter engine reference app", "version": "1.0.0"},
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "adminBearer": {"type": "http", "scheme": "bearer", "description": "ADMIN_TOKEN"},
            },
        },
    }
