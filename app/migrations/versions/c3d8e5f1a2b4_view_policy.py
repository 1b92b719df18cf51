"""the view policy: bot_view_count and unique_viewers; the counter engine's schema step
0005 (each row's unique-viewer HyperLogLog)

Revision ID: c3d8e5f1a2b4
Revises: c4e8a1f2d9b0
Create Date: 2026-12-07 16:00:00.000000

"""

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision = "c3d8e5f1a2b4"
down_revision = "c4e8a1f2d9b0"
branch_labels = None
depends_on = None

TABLES = ("posts", "articles")
COLUMNS = ("bot_view_count", "unique_viewers")


def upgrade():
    for table in TABLES:
        for column in COLUMNS:
            op.add_column(
                table,
                sa.Column(column, sa.BigInteger(), server_default=sa.text("0"), nullable=False),
            )
    # engine/sql/0005_uniques.sql, as it ran
    op.execute(
        """CREATE TABLE IF NOT EXISTS counter_uniques (
            scope text NOT NULL,
            code text NOT NULL,
            row_id bigint NOT NULL,
            hll bytea NOT NULL,
            estimate bigint NOT NULL,
            PRIMARY KEY (scope, code, row_id)
        )"""
    )


def downgrade():
    op.execute("DROP TABLE IF EXISTS counter_uniques")
    for table in TABLES:
        for column in COLUMNS:
            op.drop_column(table, column)
