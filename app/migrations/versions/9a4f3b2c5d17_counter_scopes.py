"""the counter engine's schema step 0003: each scope's shard count

Revision ID: 9a4f3b2c5d17
Revises: 7d2e1c9a0b31
Create Date: 2026-11-30 11:00:00.000000

"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "9a4f3b2c5d17"
down_revision = "7d2e1c9a0b31"
branch_labels = None
depends_on = None


def upgrade():
    # engine/sql/0003_scopes.sql, as it ran
    op.execute(
        """CREATE TABLE IF NOT EXISTS counter_scopes (
            scope text PRIMARY KEY,
            shards integer NOT NULL CHECK (shards > 0),
            changed_at timestamptz NOT NULL DEFAULT now()
        )"""
    )


def downgrade():
    op.execute("DROP TABLE IF EXISTS counter_scopes")
