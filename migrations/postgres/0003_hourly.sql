-- The ledger summed by hour, team, model, upstream, instance and miss reason, kept by a trigger
-- on every record stored (and only those: a record already stored is skipped by the writer's
-- ON CONFLICT DO NOTHING, and fires nothing). The dashboard reads whole hours from here and only
-- the part-hours at a range's ends from the ledger: a month of a team's traffic is then a few
-- thousand rows, not millions. Money as in /api/usage: summed over the records whose costs are
-- both known (`unpriced` counts the others).
CREATE TABLE ledger_hourly (
    hour_ms BIGINT NOT NULL,
    team TEXT NOT NULL,
    model TEXT NOT NULL,
    upstream TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    miss_reason TEXT NOT NULL,
    requests BIGINT NOT NULL,
    iu BIGINT NOT NULL,
    cr BIGINT NOT NULL,
    cw BIGINT NOT NULL,
    out BIGINT NOT NULL,
    cost BIGINT NOT NULL,
    unc BIGINT NOT NULL,
    unpriced BIGINT NOT NULL,
    miss_tokens BIGINT NOT NULL,
    miss_cost BIGINT NOT NULL,
    first_ms BIGINT NOT NULL,
    last_ms BIGINT NOT NULL,
    PRIMARY KEY (hour_ms, team, model, upstream, instance_id, miss_reason)
);

INSERT INTO ledger_hourly
SELECT at_ms - (at_ms % 3600000), COALESCE(team, ''), COALESCE(model, ''), upstream, instance_id,
    COALESCE(miss_reason, ''), COUNT(*), SUM(input_uncached), SUM(cache_read),
    SUM(cache_write_5m + cache_write_1h), SUM(output),
    COALESCE(SUM(CASE WHEN cost_uncached_nusd IS NOT NULL THEN cost_nusd END), 0),
    COALESCE(SUM(CASE WHEN cost_nusd IS NOT NULL THEN cost_uncached_nusd END), 0),
    SUM(CASE WHEN cost_nusd IS NULL OR cost_uncached_nusd IS NULL THEN 1 ELSE 0 END),
    COALESCE(SUM(miss_tokens), 0), COALESCE(SUM(miss_cost_nusd), 0), MIN(at_ms), MAX(at_ms)
FROM ledger
GROUP BY at_ms - (at_ms % 3600000), COALESCE(team, ''), COALESCE(model, ''), upstream, instance_id,
    COALESCE(miss_reason, '');

-- Once per INSERT statement, over the rows it stored (a transition table holds only those):
-- one upsert per group of a batch, not one per record.
CREATE FUNCTION ledger_hourly_add() RETURNS trigger AS $$
BEGIN
    INSERT INTO ledger_hourly
    SELECT at_ms - (at_ms % 3600000), COALESCE(team, ''), COALESCE(model, ''), upstream,
        instance_id, COALESCE(miss_reason, ''), COUNT(*), SUM(input_uncached), SUM(cache_read),
        SUM(cache_write_5m + cache_write_1h), SUM(output),
        COALESCE(SUM(CASE WHEN cost_uncached_nusd IS NOT NULL THEN cost_nusd END), 0),
        COALESCE(SUM(CASE WHEN cost_nusd IS NOT NULL THEN cost_uncached_nusd END), 0),
        SUM(CASE WHEN cost_nusd IS NULL OR cost_uncached_nusd IS NULL THEN 1 ELSE 0 END),
        COALESCE(SUM(miss_tokens), 0), COALESCE(SUM(miss_cost_nusd), 0), MIN(at_ms), MAX(at_ms)
    FROM stored
    GROUP BY at_ms - (at_ms % 3600000), COALESCE(team, ''), COALESCE(model, ''), upstream,
        instance_id, COALESCE(miss_reason, '')
    ON CONFLICT (hour_ms, team, model, upstream, instance_id, miss_reason) DO UPDATE SET
        requests = ledger_hourly.requests + excluded.requests,
        iu = ledger_hourly.iu + excluded.iu,
        cr = ledger_hourly.cr + excluded.cr,
        cw = ledger_hourly.cw + excluded.cw,
        out = ledger_hourly.out + excluded.out,
        cost = ledger_hourly.cost + excluded.cost,
        unc = ledger_hourly.unc + excluded.unc,
        unpriced = ledger_hourly.unpriced + excluded.unpriced,
        miss_tokens = ledger_hourly.miss_tokens + excluded.miss_tokens,
        miss_cost = ledger_hourly.miss_cost + excluded.miss_cost,
        first_ms = LEAST(ledger_hourly.first_ms, excluded.first_ms),
        last_ms = GREATEST(ledger_hourly.last_ms, excluded.last_ms);
    RETURN NULL;
END
$$ LANGUAGE plpgsql;

CREATE TRIGGER ledger_hourly_add AFTER INSERT ON ledger
    REFERENCING NEW TABLE AS stored
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_hourly_add();

-- The latest example of each miss reason.
CREATE INDEX ledger_miss ON ledger (miss_reason, at_ms);
