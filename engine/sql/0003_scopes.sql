-- counter-engine schema step 0003: each scope's shard count (engine/layout.py), so a
-- process started with another COUNTERS_SHARDS is refused and a reshard is recorded.
-- Frozen: never edit a released step; add a new one.
CREATE TABLE IF NOT EXISTS counter_scopes (
    scope text PRIMARY KEY,
    shards integer NOT NULL CHECK (shards > 0),
    changed_at timestamptz NOT NULL DEFAULT now()
);
