-- counter-engine schema step 0004: what rollbacks dropped, counted in the ledger row by
-- the transaction that decided it, so the totals survive the Redis they are about.
-- Frozen: never edit a released step; add a new one.
ALTER TABLE counter_shards ADD COLUMN IF NOT EXISTS batches_rolled_back bigint NOT NULL DEFAULT 0;
ALTER TABLE counter_shards ADD COLUMN IF NOT EXISTS deltas_dropped_rollback bigint NOT NULL DEFAULT 0;
