"""the counter engine's schema step 0004: rollback totals kept in the ledger

Revision ID: c4e8a1f2d9b0
Revises: 9a4f3b2c5d17
Create Date: 2026-12-07 16:00:00.000000

"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "c4e8a1f2d9b0"
down_revision = "9a4f3b2c5d17"
branch_labels = None
depends_on = None


def upgrade():
    # engine/sql/0004_totals.sql, as it ran
    op.execute(
        "ALTER TABLE counter_shards ADD COLUMN IF NOT EXISTS "
        "batches_rolled_back bigint NOT NULL DEFAULT 0"
    )
    op.execute(
        "ALTER TABLE counter_shards ADD COLUMN IF NOT EXISTS "
        "deltas_dropped_rollback bigint NOT NULL DEFAULT 0"
    )


def downgrade():
    op.execute("ALTER TABLE counter_shards DROP COLUMN IF EXISTS deltas_dropped_rollback")
    op.execute("ALTER TABLE counter_shards DROP COLUMN IF EXISTS batches_rolled_back")
