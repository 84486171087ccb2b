"""A batch of stage changes takes its locks and reads what it decides on in one statement.

The write path took the tenant's configuration lock (shared) and its idempotency keys'
locks in one statement, then read the configuration, the customers (locked) and the keys'
first results in a second: a statement's snapshot is taken when it starts, before its
advisory lock is granted, so a read in the same statement would miss a configuration saved
while it waited. `c360_prepare_changes` takes the locks, then reads in a query of its own:
a VOLATILE function's queries each take a fresh snapshot under READ COMMITTED, so the read
sees everything the lock holders before it committed, as the second statement did. One
round trip fewer per batch (issue 11: "the configuration lock and read and the row locks
can be one statement").

It runs as its caller (SECURITY INVOKER): row-level security applies to its reads, for the
tenant it sets first, as the two statements did.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels = None
depends_on = None

PREPARE = """
CREATE FUNCTION c360_prepare_changes(
  p_tenant text, p_subject text, p_ids uuid[], p_keys text[], p_hours int, p_config boolean
) RETURNS TABLE (
  kind text, version int, config text, updated_at timestamptz, updated_by text, id uuid,
  stage text, entered_at timestamptz, key text, fingerprint text, result text
) LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
  h bigint;
BEGIN
  PERFORM set_config('app.tenant_id', p_tenant, true);
  -- Stage changes share the tenant's configuration lock; saving a configuration takes it
  -- alone. Held already when the unit of work read the configuration before (p_config).
  IF p_config THEN
    PERFORM pg_advisory_xact_lock_shared(hashtextextended('stage-config:' || p_tenant, 0));
  END IF;
  -- Requests with the same key serialise on it (even for different customers), so the
  -- second sees the first's record; in one sorted order, after the configuration's.
  FOR h IN
    SELECT DISTINCT hashtextextended('idem:' || p_tenant || ':' || p_subject || ':' || k, 0)
    FROM unnest(p_keys) k ORDER BY 1
  LOOP
    PERFORM pg_advisory_xact_lock(h);
  END LOOP;
  -- A query of its own, so a snapshot taken after the locks were granted. The lifecycle's
  -- own time, not the row's: profile changes move `updated_at` too.
  RETURN QUERY
    SELECT 'config'::text, x.version, x.config::text, x.updated_at, x.updated_by, NULL::uuid,
           NULL::text, NULL::timestamptz, NULL::text, NULL::text, NULL::text
    FROM (SELECT s.version, s.config, s.updated_at, s.updated_by FROM stage_configs s
          WHERE s.tenant_id = p_tenant ORDER BY s.version DESC LIMIT 1) x
    WHERE p_config
    UNION ALL
    SELECT 'customer'::text, c.version, NULL::text, c.updated_at, NULL::text, c.id, c.stage,
           c.entered_at, NULL::text, NULL::text, NULL::text
    FROM (SELECT u.id, u.stage, u.version, u.stage_entered_at AS entered_at,
                 COALESCE(u.lifecycle_updated_at, u.updated_at) AS updated_at
          FROM customers u
          WHERE u.tenant_id = p_tenant AND u.id = ANY(p_ids) AND u.deleted_at IS NULL
          ORDER BY u.id FOR UPDATE) c
    UNION ALL
    SELECT 'key'::text, NULL::int, NULL::text, NULL::timestamptz, NULL::text, NULL::uuid,
           NULL::text, NULL::timestamptz, k.key, k.fingerprint, k.result::text
    FROM idempotency_keys k
    WHERE k.tenant_id = p_tenant AND k.subject = p_subject AND k.key = ANY(p_keys)
      AND k.created_at > now() - make_interval(hours => p_hours);
END
$$
"""


def upgrade() -> None:
    op.execute(PREPARE)


def downgrade() -> None:
    op.execute("DROP FUNCTION c360_prepare_changes(text, text, uuid[], text[], int, boolean)")
