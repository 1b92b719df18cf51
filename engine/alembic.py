"""Alembic helper: apply the engine's schema steps (engine.schema) from a site's
migration.

    from engine import alembic as counter_schema

    def upgrade():
        counter_schema.upgrade(op, "0001_ledger")

    def downgrade():
        counter_schema.downgrade(op, "0001_ledger")

Steps are frozen files, so a migration that names one runs the same SQL forever. To
keep the SQL in the migration itself instead, paste ``flask counters schema-sql``.
"""

from __future__ import annotations

from . import schema

# step -> statements that undo it
UNDO = {
    "0001_ledger": schema.DROP,
    "0002_lineage": [
        f"ALTER TABLE counter_shards DROP COLUMN IF EXISTS {column}"
        for column in ("verdict", "past_gens", "base_seq", "gen")
    ],
}


def upgrade(op, step: str) -> None:
    for stmt in schema.statements(step):
        op.execute(stmt)


def downgrade(op, step: str) -> None:
    for stmt in UNDO[step]:
        op.execute(stmt)
