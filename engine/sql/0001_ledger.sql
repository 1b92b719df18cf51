-- counter-engine schema step 0001: the per-shard ledger and the batch sequence.
-- Frozen: never edit a released step; add a new one.
CREATE SEQUENCE IF NOT EXISTS counter_batch_seq AS bigint;

CREATE TABLE IF NOT EXISTS counter_shards (
    scope text NOT NULL,
    shard integer NOT NULL,
    applied_seq bigint NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, shard)
);
