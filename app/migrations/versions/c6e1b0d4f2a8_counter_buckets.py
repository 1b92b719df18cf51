"""the counter engine's schema step 0006: time buckets and trending window totals

Revision ID: c6e1b0d4f2a8
Revises: c3d8e5f1a2b4
Create Date: 2026-12-07 16:00:00.000000

"""

from alembic import op

# revision identifiers, used by Alembic.
revision = "c6e1b0d4f2a8"
down_revision = "c3d8e5f1a2b4"
branch_labels = None
depends_on = None


def upgrade():
    # engine/sql/0006_buckets.sql, as it ran
    op.execute(
        """CREATE TABLE IF NOT EXISTS counter_hourly (
    scope text NOT NULL,
    tbl text NOT NULL,
    col text NOT NULL,
    row_id bigint NOT NULL,
    hour timestamptz NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (scope, tbl, col, row_id, hour)
)"""
    )
    op.execute(
        """CREATE INDEX IF NOT EXISTS counter_hourly_by_hour
            ON counter_hourly (scope, tbl, col, hour)"""
    )
    op.execute(
        """CREATE TABLE IF NOT EXISTS counter_daily (
    scope text NOT NULL,
    tbl text NOT NULL,
    col text NOT NULL,
    row_id bigint NOT NULL,
    day date NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (scope, tbl, col, row_id, day)
)"""
    )
    op.execute("""CREATE INDEX IF NOT EXISTS counter_daily_by_day ON counter_daily (scope, day)""")
    op.execute(
        """CREATE TABLE IF NOT EXISTS counter_window_edges (
    scope text NOT NULL,
    tbl text NOT NULL,
    col text NOT NULL,
    win text NOT NULL,
    edge timestamptz NOT NULL,
    PRIMARY KEY (scope, tbl, col, win)
)"""
    )
    op.execute(
        """CREATE TABLE IF NOT EXISTS counter_window_totals (
    scope text NOT NULL,
    tbl text NOT NULL,
    col text NOT NULL,
    win text NOT NULL,
    row_id bigint NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (scope, tbl, col, win, row_id)
)"""
    )
    op.execute(
        """CREATE INDEX IF NOT EXISTS counter_window_rank
    ON counter_window_totals (scope, tbl, col, win, n DESC, row_id DESC)"""
    )


def downgrade():
    for table in (
        "counter_window_totals",
        "counter_window_edges",
        "counter_daily",
        "counter_hourly",
    ):
        op.execute(f"DROP TABLE IF EXISTS {table}")
