"""Reading request input: the JSON body and query parameters, validated or a 400."""

from __future__ import annotations

from flask import request

from .errors import bad_request


def json_object() -> dict:
    """The body as a JSON object, whatever the Content-Type says; otherwise 400."""
    try:
        data = request.get_json(force=True, silent=True)
    except RecursionError:  # nested deeper than the parser goes: not a body we take
        data = None
    if not isinstance(data, dict):
        raise bad_request("body must be a JSON object", "invalid_json")
    return data


def text(data: dict, name: str, min_len: int, max_len: int) -> str:
    """A string field of ``min_len``..``max_len`` characters that Postgres can store.

    Postgres text cannot hold NUL and psycopg2 cannot encode lone surrogates: both are
    refused here rather than failing in the database.
    """
    value = data.get(name)
    if not isinstance(value, str):
        raise bad_request(f"{name} must be a string")
    if not min_len <= len(value) <= max_len:
        raise bad_request(f"{name} must be {min_len} to {max_len} characters")
    if min_len and not value.strip():
        raise bad_request(f"{name} must not be blank")
    if "\x00" in value:
        raise bad_request(f"{name} must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request(f"{name} is not valid Unicode") from None
    return value


def query_int(name: str, default: int | None, low: int, high: int) -> int | None:
    """An integer query parameter within ``low..high`` (plain digits), or ``default``."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or not low <= int(raw) <= high:
        raise bad_request(f"{name} must be an integer from {low} to {high}")
    return int(raw)
