-- counter-engine schema step 0006: time buckets of bucketed counters (engine/windows.py).
-- The flush adds each batch's hourly deltas to counter_hourly in its own transaction;
-- the retention task moves old hours into counter_daily. counter_window_totals holds
-- each row's total over a trending window (24h, 7d) from counter_window_edges.edge on,
-- kept by the flush and rolled forward by the retention task.
-- Frozen: never edit a released step; add a new one.
CREATE TABLE IF NOT EXISTS counter_hourly (
    scope text NOT NULL,
    tbl text NOT NULL,
    col text NOT NULL,
    row_id bigint NOT NULL,
    hour timestamptz NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (scope, tbl, col, row_id, hour)
);
CREATE INDEX IF NOT EXISTS counter_hourly_by_hour ON counter_hourly (scope, tbl, col, hour);

CREATE TABLE IF NOT EXISTS counter_daily (
    scope text NOT NULL,
    tbl text NOT NULL,
    col text NOT NULL,
    row_id bigint NOT NULL,
    day date NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (scope, tbl, col, row_id, day)
);
CREATE INDEX IF NOT EXISTS counter_daily_by_day ON counter_daily (scope, day);

CREATE TABLE IF NOT EXISTS counter_window_edges (
    scope text NOT NULL,
    tbl text NOT NULL,
    col text NOT NULL,
    win text NOT NULL,
    edge timestamptz NOT NULL,
    PRIMARY KEY (scope, tbl, col, win)
);

CREATE TABLE IF NOT EXISTS counter_window_totals (
    scope text NOT NULL,
    tbl text NOT NULL,
    col text NOT NULL,
    win text NOT NULL,
    row_id bigint NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (scope, tbl, col, win, row_id)
);
CREATE INDEX IF NOT EXISTS counter_window_rank
    ON counter_window_totals (scope, tbl, col, win, n DESC, row_id DESC);
