"""What a batch of stage changes decides on, for changes of several actors at once.

`c360_prepare_changes` (0012) reads the first results of one actor's idempotency keys. The
gateway now writes the concurrent stage changes of one tenant's requests in one unit of work
(docs/WRITE_PATH.md, "Concurrent requests, one transaction"); their actors differ, so
`c360_prepare_batch` takes each key with its actor and answers the actor with each first
result. Locks and their order are those of 0012: the configuration's (shared), then every
(actor, key) lock in one sorted order, then the customers in id order.

0012's function stays: code of the revision before reads through it.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels = None
depends_on = None

PREPARE = """
CREATE FUNCTION c360_prepare_batch(
  p_tenant text, p_ids uuid[], p_subjects text[], p_keys text[], p_hours int, p_config boolean
) RETURNS TABLE (
  kind text, version int, config text, updated_at timestamptz, updated_by text, id uuid,
  stage text, entered_at timestamptz, subject text, key text, fingerprint text, result text
) LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
  h bigint;
BEGIN
  PERFORM set_config('app.tenant_id', p_tenant, true);
  IF p_config THEN
    PERFORM pg_advisory_xact_lock_shared(hashtextextended('stage-config:' || p_tenant, 0));
  END IF;
  -- The same lock per (actor, key) as 0012's, so both functions serialise a key's requests.
  FOR h IN
    SELECT DISTINCT hashtextextended('idem:' || p_tenant || ':' || s || ':' || k, 0)
    FROM unnest(p_subjects, p_keys) AS x(s, k) ORDER BY 1
  LOOP
    PERFORM pg_advisory_xact_lock(h);
  END LOOP;
  RETURN QUERY
    SELECT 'config'::text, x.version, x.config::text, x.updated_at, x.updated_by, NULL::uuid,
           NULL::text, NULL::timestamptz, NULL::text, NULL::text, NULL::text, NULL::text
    FROM (SELECT s.version, s.config, s.updated_at, s.updated_by FROM stage_configs s
          WHERE s.tenant_id = p_tenant ORDER BY s.version DESC LIMIT 1) x
    WHERE p_config
    UNION ALL
    SELECT 'customer'::text, c.version, NULL::text, c.updated_at, NULL::text, c.id, c.stage,
           c.entered_at, NULL::text, NULL::text, NULL::text, NULL::text
    FROM (SELECT u.id, u.stage, u.version, u.stage_entered_at AS entered_at,
                 COALESCE(u.lifecycle_updated_at, u.updated_at) AS updated_at
          FROM customers u
          WHERE u.tenant_id = p_tenant AND u.id = ANY(p_ids) AND u.deleted_at IS NULL
          ORDER BY u.id FOR UPDATE) c
    UNION ALL
    SELECT 'key'::text, NULL::int, NULL::text, NULL::timestamptz, NULL::text, NULL::uuid,
           NULL::text, NULL::timestamptz, k.subject, k.key, k.fingerprint, k.result::text
    FROM idempotency_keys k
    JOIN unnest(p_subjects, p_keys) AS x(s, k) ON k.subject = x.s AND k.key = x.k
    WHERE k.tenant_id = p_tenant
      AND k.created_at > now() - make_interval(hours => p_hours);
END
$$
"""


def upgrade() -> None:
    op.execute(PREPARE)


def downgrade() -> None:
    op.execute("DROP FUNCTION c360_prepare_batch(text, uuid[], text[], text[], int, boolean)")
