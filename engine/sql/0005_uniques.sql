-- counter-engine schema step 0005: each row's unique-viewer HyperLogLog, in Redis' own
-- encoding, so that a Redis wipe does not reset the estimate (engine/uniques.py). The
-- flush merges it back into Redis (PFMERGE, idempotent) before storing the union.
-- Frozen: never edit a released step; add a new one.
CREATE TABLE IF NOT EXISTS counter_uniques (
    scope text NOT NULL,
    code text NOT NULL,
    row_id bigint NOT NULL,
    hll bytea NOT NULL,
    estimate bigint NOT NULL,
    PRIMARY KEY (scope, code, row_id)
);
