-- Prototype g1 (scratch database only): stage counts as append-only deltas.
-- The write statement inserts its per-stage deltas (never updates a shared row); readers sum
-- stage_counts + stage_count_deltas in one statement (one snapshot); c360_fold_counts()
-- moves the deltas into stage_counts in one transaction (DELETE ... RETURNING and the add),
-- so a reader sees every delta exactly once, before or after a fold.
\set ON_ERROR_STOP on
CREATE TABLE stage_count_deltas (
  tenant_id text NOT NULL,
  stage text NOT NULL,
  delta bigint NOT NULL
);
CREATE INDEX ix_stage_count_deltas_tenant ON stage_count_deltas (tenant_id);
ALTER TABLE stage_count_deltas ENABLE ROW LEVEL SECURITY;
ALTER TABLE stage_count_deltas FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON stage_count_deltas
  USING (tenant_id = current_setting('app.tenant_id', true)
         OR current_setting('app.scope', true) = 'system')
  WITH CHECK (tenant_id = current_setting('app.tenant_id', true)
              OR current_setting('app.scope', true) = 'system');
GRANT SELECT, INSERT ON stage_count_deltas TO :"app";

CREATE FUNCTION c360_fold_counts(p_tenant text) RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
  WITH gone AS (
    DELETE FROM stage_count_deltas WHERE tenant_id = p_tenant RETURNING stage, delta
  ), s AS (
    SELECT stage, sum(delta) AS d, count(*) AS n FROM gone GROUP BY stage
  ), up AS (
    INSERT INTO stage_counts AS c (tenant_id, stage, count)
    SELECT p_tenant, stage, d FROM s ORDER BY stage
    ON CONFLICT (tenant_id, stage) DO UPDATE SET count = c.count + EXCLUDED.count
  )
  SELECT COALESCE(sum(n), 0)::bigint FROM s
$$;
GRANT EXECUTE ON FUNCTION c360_fold_counts(text) TO :"app";

-- The summary read.
CREATE FUNCTION c360_summary(p_tenant text) RETURNS TABLE (stage text, n bigint)
LANGUAGE sql STABLE AS $$
  SELECT stage, sum(n)::bigint FROM (
    SELECT stage, count AS n FROM stage_counts WHERE tenant_id = p_tenant
    UNION ALL
    SELECT stage, delta FROM stage_count_deltas WHERE tenant_id = p_tenant
  ) x GROUP BY stage
$$;
