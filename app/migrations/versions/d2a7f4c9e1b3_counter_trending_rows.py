"""the counter engine's schema step 0007: trending totals as one row per counted row

Revision ID: d2a7f4c9e1b3
Revises: c6e1b0d4f2a8
Create Date: 2026-12-08 01:00:00.000000

"""

from alembic import op

from engine import alembic as counter_schema

# revision identifiers, used by Alembic.
revision = "d2a7f4c9e1b3"
down_revision = "c6e1b0d4f2a8"
branch_labels = None
depends_on = None


def upgrade():
    # engine/sql/0007_trending_rows.sql (frozen): it moves the totals of step 0006
    counter_schema.upgrade(op, "0007_trending_rows")


def downgrade():
    counter_schema.downgrade(op, "0007_trending_rows")
