"""the counter engine's schema step 0002: the lineage of each shard's last batch

Revision ID: 7d2e1c9a0b31
Revises: 4b9c505b96a4
Create Date: 2026-11-30 09:40:00.000000

"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "7d2e1c9a0b31"
down_revision = "4b9c505b96a4"
branch_labels = None
depends_on = None

# engine/sql/0002_lineage.sql, as it ran
UPGRADE = [
    "ALTER TABLE counter_shards ADD COLUMN IF NOT EXISTS gen text",
    "ALTER TABLE counter_shards ADD COLUMN IF NOT EXISTS base_seq bigint",
    "ALTER TABLE counter_shards ADD COLUMN IF NOT EXISTS past_gens text[] NOT NULL DEFAULT '{}'",
    "ALTER TABLE counter_shards ADD COLUMN IF NOT EXISTS verdict text NOT NULL DEFAULT 'applied'",
]


def upgrade():
    for statement in UPGRADE:
        op.execute(statement)


def downgrade():
    for column in ("verdict", "past_gens", "base_seq", "gen"):
        op.execute(f"ALTER TABLE counter_shards DROP COLUMN IF EXISTS {column}")
