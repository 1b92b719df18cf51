"""``POST /api/users``: sign up, get a token once."""

from __future__ import annotations

from flask import Blueprint

from ..errors import ApiError, bad_request
from ..payload import json_object
from ..users import UsernameTaken, create_user, valid_username

bp = Blueprint("users", __name__, url_prefix="/api/users")


@bp.post("")
def create():
    username = json_object().get("username")
    if not valid_username(username):
        raise bad_request("username must be 3 to 32 characters of A-Z, a-z, 0-9 and _")
    try:
        user_id, token = create_user(username)
    except UsernameTaken:
        raise ApiError(409, "username_taken", f"username {username!r} is taken") from None
    return {"id": user_id, "username": username, "token": token}, 201
