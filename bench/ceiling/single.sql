\set r random(1, :ncust)
BEGIN;
SELECT set_config('app.tenant_id', :t, true), pg_advisory_xact_lock_shared(hashtextextended('stage-config:' || :t, 0));
SELECT version, config, updated_at, updated_by FROM stage_configs WHERE tenant_id = :t ORDER BY version DESC LIMIT 1;
SELECT array_agg(x.hid)::text AS ids, array_agg(x.id)::text AS customer_ids,
       array_agg(x.version + 1)::text AS versions, array_agg(x.stage)::text AS froms,
       array_agg(x.to_stage)::text AS tos, array_agg(now())::text AS ats,
       array_agg('bench-user'::text)::text AS bys, array_agg('Budget Cut'::text)::text AS reasons,
       array_agg('API'::text)::text AS sources, array_agg(1)::text AS config_versions,
       array_agg(jsonb_build_object('specversion', '1.0', 'id', gen_random_uuid(),
         'source', CAST(:evsource AS text), 'type', CAST(:topic AS text), 'time', now(),
         'datacontenttype', 'application/json', 'subject', x.id, 'tenantid', CAST(:t AS text),
         'data', jsonb_build_object('transition_id', x.hid, 'customer_id', x.id,
           'from_stage', x.stage, 'to_stage', x.to_stage, 'changed_at', now(),
           'changed_by', 'bench-user', 'reason_code', 'Budget Cut', 'source', 'API',
           'version', x.version + 1)))::text AS events
FROM (SELECT gen_random_uuid() AS hid, c.*,
             (array_remove(ARRAY['Prospect', 'Onboarded', 'Active', 'At-Risk', 'Churned'], c.stage))[1 + floor(random() * 4)::int] AS to_stage
      FROM (SELECT id, stage, version, stage_entered_at,
                   COALESCE(lifecycle_updated_at, updated_at) AS updated_at FROM customers
            WHERE tenant_id = :t AND id = ANY(ARRAY(SELECT id FROM bench_cmap WHERE n = :r))
              AND deleted_at IS NULL ORDER BY id FOR UPDATE) c) x \gset
@RECORD@
COMMIT;
@AFTER@
