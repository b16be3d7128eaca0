-- Where a miss diverged (the segment name, never its text) and what it cost: the tokens it
-- could have read, priced at the input price less the cache-read price. For the dashboard's
-- "misses explained".
ALTER TABLE ledger ADD COLUMN miss_segment TEXT;
ALTER TABLE ledger ADD COLUMN miss_cost_nusd BIGINT;
