-- counter-engine schema step 0007: trending totals as one row per counted row.
-- counter_series numbers each (scope, table, column); counter_trending_totals holds a
-- row's total over each trending window (24h, 7d) in one row keyed by that number, so
-- the flush updates one narrow row per counted row instead of one text-keyed row per
-- window. The totals of step 0006 move here; its table goes (run again, as
-- engine.schema.create does, 0006 makes it anew, empty, and this step drops it again).
-- Frozen: never edit a released step; add a new one.
CREATE TABLE IF NOT EXISTS counter_series (
    series serial PRIMARY KEY,
    scope text NOT NULL,
    tbl text NOT NULL,
    col text NOT NULL,
    UNIQUE (scope, tbl, col)
);

CREATE TABLE IF NOT EXISTS counter_trending_totals (
    series int NOT NULL,
    row_id bigint NOT NULL,
    n_24h bigint NOT NULL,
    n_7d bigint NOT NULL,
    PRIMARY KEY (series, row_id)
);
CREATE INDEX IF NOT EXISTS counter_trending_24h
    ON counter_trending_totals (series, n_24h DESC, row_id DESC);
CREATE INDEX IF NOT EXISTS counter_trending_7d
    ON counter_trending_totals (series, n_7d DESC, row_id DESC);

-- no flush adds to the old totals while they move
LOCK TABLE counter_window_edges, counter_window_totals IN EXCLUSIVE MODE;
INSERT INTO counter_series (scope, tbl, col)
    SELECT DISTINCT scope, tbl, col FROM counter_window_edges
    ON CONFLICT (scope, tbl, col) DO NOTHING;
INSERT INTO counter_trending_totals AS t (series, row_id, n_24h, n_7d)
    SELECT s.series, w.row_id,
           coalesce(sum(w.n) FILTER (WHERE w.win = '24h'), 0),
           coalesce(sum(w.n) FILTER (WHERE w.win = '7d'), 0)
      FROM counter_window_totals w
      JOIN counter_series s ON s.scope = w.scope AND s.tbl = w.tbl AND s.col = w.col
     GROUP BY s.series, w.row_id
    ON CONFLICT (series, row_id) DO UPDATE
       SET n_24h = t.n_24h + EXCLUDED.n_24h, n_7d = t.n_7d + EXCLUDED.n_7d;
DROP TABLE counter_window_totals;
