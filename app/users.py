"""Creating users and issuing their tokens."""

from __future__ import annotations

import re

import sqlalchemy as sa
import sqlalchemy.exc

from .auth import hash_token, new_token
from .extensions import db
from .models import User

USERNAME = re.compile(r"[A-Za-z0-9_]{3,32}")


class UsernameTaken(Exception):
    """Another user already has this username."""


def valid_username(value) -> bool:
    return isinstance(value, str) and USERNAME.fullmatch(value) is not None


def create_user(username: str) -> tuple[int, str]:
    """Insert a user; returns its id and its token, which is shown once and stored hashed."""
    token = new_token()
    statement = (
        sa.insert(User).values(username=username, token_hash=hash_token(token)).returning(User.id)
    )
    try:
        user_id = db.session.execute(statement).scalar_one()
        db.session.commit()
    except sqlalchemy.exc.IntegrityError:
        db.session.rollback()
        raise UsernameTaken(username) from None
    return user_id, token


def reissue_token(username: str) -> tuple[int, str] | None:
    """Give an existing user a new token (the old one stops working); None if unknown."""
    token = new_token()
    statement = (
        sa.update(User)
        .where(User.username == username)
        .values(token_hash=hash_token(token))
        .returning(User.id)
    )
    user_id = db.session.execute(statement).scalar()
    db.session.commit()
    return (user_id, token) if user_id is not None else None
