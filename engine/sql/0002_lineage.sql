-- counter-engine schema step 0002: the lineage of the last batch applied per shard
-- (which Redis history it came from, and what the flush did with it; engine/lineage.py).
-- Frozen: never edit a released step; add a new one.
ALTER TABLE counter_shards ADD COLUMN IF NOT EXISTS gen text;
ALTER TABLE counter_shards ADD COLUMN IF NOT EXISTS base_seq bigint;
ALTER TABLE counter_shards ADD COLUMN IF NOT EXISTS past_gens text[] NOT NULL DEFAULT '{}';
ALTER TABLE counter_shards ADD COLUMN IF NOT EXISTS verdict text NOT NULL DEFAULT 'applied';
