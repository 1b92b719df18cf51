"""Postgres databases a run creates for itself and drops at its end: nothing else is
ever created or dropped."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from harness.servers import ServerMissing
from harness.urls import with_database


def scratch_name(prefix: str) -> str:
    """``<prefix>_<8 random hex digits>``: unique per run."""
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


def run_admin(admin_url: str, statement: str) -> None:
    """One statement outside a transaction (CREATE / DROP DATABASE need that)."""
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(statement))
    finally:
        admin.dispose()


class ScratchDatabase:
    """A Postgres database created now on the server of ``admin_url``; :meth:`drop` (or
    the end of a ``with`` block) drops it."""

    def __init__(self, admin_url: str, name: str) -> None:
        self.admin_url = admin_url
        self.name = name
        self.url = with_database(admin_url, name)
        try:
            run_admin(admin_url, f'CREATE DATABASE "{name}"')
        except sa.exc.OperationalError as exc:
            raise ServerMissing(f"Postgres unusable: {exc}") from exc

    def drop(self) -> None:
        run_admin(self.admin_url, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def __enter__(self) -> ScratchDatabase:
        return self

    def __exit__(self, *exc) -> None:
        self.drop()
