-- Seed of the ceiling's template database (run by bench/ceiling/run.py as the owner, after
-- the project's migrations and grant_application_role). psql variables: tenant, ncust.
-- One tenant, the default stage configuration, :ncust customers with 1-4 history rows each
-- (written through the real triggers: linked at commit into one chain), stage counts from
-- the rows, and bench_cmap: row number -> customer id, for pgbench's `random(1, :ncust)`.
\set ON_ERROR_STOP on

INSERT INTO stage_configs (tenant_id, version, config, updated_at, updated_by)
VALUES (:'tenant', 1, '{"stages": ["Prospect", "Onboarded", "Active", "At-Risk", "Churned"],
  "requiredReasonCodes": ["At-Risk", "Churned"], "initialStage": "Prospect",
  "transitions": [], "eventRules": [{"eventType": "contract.renewed", "toStage": "Active"}]}',
  now(), 'seed');

CREATE TABLE bench_cmap (n int PRIMARY KEY, id uuid NOT NULL UNIQUE);
INSERT INTO bench_cmap SELECT g, gen_random_uuid() FROM generate_series(1, :ncust) g;

-- A walk per customer: starts in Prospect, each step moves 1-4 stages on (never stays).
CREATE TEMP TABLE walk AS
SELECT m.id AS customer_id, m.n, v, k,
       (ARRAY['Prospect', 'Onboarded', 'Active', 'At-Risk', 'Churned'])[
         1 + (sum(step) OVER (PARTITION BY m.id ORDER BY v) % 5)::int] AS to_stage,
       now() - make_interval(days => 400 - v * 30, secs => m.n) AS at
FROM bench_cmap m
CROSS JOIN LATERAL (SELECT 1 + (m.n * 7919) % 4 AS k) kk
CROSS JOIN LATERAL generate_series(1, kk.k) v
CROSS JOIN LATERAL (SELECT CASE WHEN v = 1 THEN 0 ELSE 1 + ((m.n * 31 + v * 17) % 4) END
                    AS step) s;

BEGIN;
INSERT INTO lifecycle_history (id, tenant_id, customer_id, version, from_stage, to_stage,
                               changed_at, changed_by, reason_code, source, config_version)
SELECT gen_random_uuid(), :'tenant', customer_id, v,
       lag(to_stage) OVER (PARTITION BY customer_id ORDER BY v), to_stage, at,
       CASE WHEN v = 1 THEN 'seed' ELSE 'user-' || (n % 25 + 1) END,
       CASE WHEN to_stage IN ('At-Risk', 'Churned') AND v > 1 THEN 'Budget Cut' END,
       CASE WHEN v = 1 THEN 'SYSTEM' ELSE 'UI' END, 1
FROM walk ORDER BY customer_id, v;
COMMIT;

INSERT INTO customers (tenant_id, id, name, email, phone, email_bidx, company_name, tier, tags,
                       assigned_to, created_at, updated_at, stage, stage_entered_at,
                       lifecycle_updated_at, lifecycle_updated_by, reason_code, source, version)
SELECT :'tenant', w.customer_id, 'Customer ' || w.n,
       'v1.' || md5('e' || w.n) || md5('f' || w.n) || md5('g' || w.n),
       'v1.' || md5('p' || w.n) || md5('q' || w.n),
       decode(md5('b' || w.n) || md5('c' || w.n), 'hex'),
       'Company ' || (w.n % 997), (ARRAY['FREE', 'BASIC', 'PRO', 'ENTERPRISE'])[1 + w.n % 4],
       (ARRAY['vip', 'smb', 'emea', 'trial', 'partner', 'upsell'])[1:(w.n % 4)],
       'user-' || (w.n % 25 + 1), w.at - interval '1 day', w.at, w.to_stage, w.at, w.at,
       'user-' || (w.n % 25 + 1), NULL, 'UI', w.k
FROM walk w WHERE w.v = w.k;

INSERT INTO stage_counts (tenant_id, stage, count)
SELECT :'tenant', stage, count(*) FROM customers WHERE tenant_id = :'tenant' GROUP BY stage;

GRANT SELECT ON bench_cmap TO :"app";
