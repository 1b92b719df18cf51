"""Who views a post or an article, for the view policy (engine/policy.py).

An anonymous view costs no SQL: the visitor is the ``vid`` cookie, or the address and
User-Agent hash. A view with a bearer token costs one statement, which finds the user
and the row's author together, so that the author's own views are held back in the
increment's own script: the beacon stays one Redis round trip.
"""

from __future__ import annotations

import sqlalchemy as sa

from engine import Visit
from engine.flask.visitors import policy_on, visit

from .auth import bearer_token, hash_token, unauthorized
from .extensions import db
from .kinds import Kind
from .models import User


def viewer_and_author(kind: Kind, token: str, row_id: int) -> tuple[int | None, int | None]:
    """(id of the token's user or None, the row's author or None), one statement."""
    author = sa.select(kind.model.author_id).where(kind.model.id == row_id).scalar_subquery()
    query = sa.select(User.id, author).where(User.token_hash == hash_token(token))
    found = db.session.execute(query).first()
    return (found[0], found[1]) if found is not None else (None, None)


def view_visit(kind: Kind, row_id: int) -> Visit | None:
    """The request's visit of a row (None when the policy is off); a bad token is a 401."""
    if not policy_on():
        return None
    token = bearer_token()
    if token is None:
        return visit()
    user_id, author_id = viewer_and_author(kind, token, row_id)
    if user_id is None:
        raise unauthorized("invalid token")
    return visit(user_id=user_id, author_id=author_id)
