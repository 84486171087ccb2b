"""A stage change's history row and audit event are written once, by the seal.

Since 0011 a writer inserted its history row unlinked, its audit event's outbox row
unsealed, and a queue row; the seal then updated both rows (the history's links and seq,
the event's chain fields and seq): two more row versions and about nine more index entries
per change, the updates alone about 40 us of PostgreSQL's time per change under bulk writes
(docs/BENCHMARKS.md, session 16). Now the writer queues the whole change in
`history_unsealed` (the history row's columns, the audit event, its pre-drawn outbox id, its
trace context, its time) and the seal inserts the history row already linked and the outbox
row already sealed, then deletes the queue row, in one transaction as before. The digest,
the chain lock, the order of sealing, the counts and the fan-out are those of 0015.

Readers of a customer's history read `lifecycle_history_all`: the sealed rows and the
queued ones (a change is in exactly one of the two in any snapshot).

Writers that insert into `lifecycle_history` themselves (the seed's copy, older gateways
during a rolling update) are linked at their commit, whatever they set: an older gateway's
queue row (only the seq and the stages filled) is counted and dropped by the next seal.
Only the seal supplies links: a row inserted with links by anyone else is refused by a
trigger whose WHEN clause lets every other row by without a call.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

from importlib import import_module

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels = None
depends_on = None

# The whole change, queued (NULL in an older gateway's queue rows, which hold only the seq
# and the stages: their history row exists and is linked at its commit).
_QUEUED = (
    sa.Column("customer_id", sa.UUID()),
    sa.Column("version", sa.Integer()),
    sa.Column("changed_at", sa.DateTime(timezone=True)),
    sa.Column("changed_by", sa.Text()),
    sa.Column("reason_code", sa.Text()),
    sa.Column("source", sa.String(16)),
    sa.Column("config_version", sa.Integer()),
    sa.Column("outbox_id", sa.BigInteger()),
    sa.Column("topic", sa.Text()),
    sa.Column("key", sa.Text()),
    sa.Column("event", JSONB()),
    sa.Column("traceparent", sa.Text()),
    sa.Column("tracestate", sa.Text()),
    sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()")),
)
_WHOLE = (
    "customer_id IS NULL OR (version IS NOT NULL AND changed_at IS NOT NULL "
    "AND changed_by IS NOT NULL AND source IS NOT NULL AND config_version IS NOT NULL)"
)
_EVENT = "outbox_id IS NULL OR (topic IS NOT NULL AND key IS NOT NULL AND event IS NOT NULL)"

ALL_HISTORY = """
CREATE VIEW lifecycle_history_all WITH (security_invoker = true) AS
SELECT id, tenant_id, customer_id, version, from_stage, to_stage, changed_at, changed_by,
       reason_code, source, config_version
FROM lifecycle_history
UNION ALL
SELECT history_id, tenant_id, customer_id, version, from_stage, to_stage, changed_at,
       changed_by, reason_code, source, config_version
FROM history_unsealed WHERE customer_id IS NOT NULL
"""

# Links come from the seal (its SET below) or from the commit-time link, never from the
# row's writer. Raised, not cleared as before: only the seal supplies links now.
REFUSE_LINKS = """
CREATE OR REPLACE FUNCTION c360_history_chain() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'lifecycle_history: only the seal links rows'
    USING ERRCODE = 'insufficient_privilege';
END
$$
"""
_CHAIN_TRIGGER = (
    "CREATE TRIGGER lifecycle_history_chain BEFORE INSERT ON lifecycle_history FOR EACH ROW "
    "WHEN ((NEW.chain_pos IS NOT NULL OR NEW.prev_hash IS NOT NULL OR NEW.row_hash IS NOT NULL)"
    " AND current_setting('c360.sealing', true) IS DISTINCT FROM 'on') "
    "EXECUTE FUNCTION c360_history_chain()"
)
# The commit-time link, for rows inserted unlinked (the seal's are linked already).
_LINK_TRIGGER = (
    "CREATE CONSTRAINT TRIGGER lifecycle_history_link AFTER INSERT ON lifecycle_history "
    "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.chain_pos IS NULL) "
    "EXECUTE FUNCTION c360_history_link()"
)

SEAL = """
CREATE OR REPLACE FUNCTION c360_seal(p_tenant text, p_max int, OUT sealed int, OUT oldest_ms float8)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
-- The batch's rows are found by key, one index probe each, whatever the tables' size.
SET enable_hashjoin = off SET enable_mergejoin = off
SET c360.sealing = 'on' AS $$
DECLARE
  pos bigint;
  prev bytea;
  q history_unsealed%ROWTYPE;
  h lifecycle_history%ROWTYPE;
  o outbox%ROWTYPE;
  hs lifecycle_history[] := '{}';
  os outbox[] := '{}';
  queued uuid[] := '{}';
  tos text[] := '{}';
  froms text[] := '{}';
  oldest timestamptz;
  seq_of_history regclass := pg_get_serial_sequence('lifecycle_history', 'seq')::regclass;
  boxes bigint[];
BEGIN
  -- The commit-time link's lock: one chain per tenant, whoever links.
  PERFORM pg_advisory_xact_lock(hashtextextended('history-chain:' || p_tenant, 0));
  -- A statement after the lock (READ COMMITTED): sees every batch sealed before this one.
  SELECT position, head INTO pos, prev FROM history_heads WHERE tenant_id = p_tenant;
  IF NOT FOUND THEN
    pos := 0;
    prev := decode(repeat('00', 32), 'hex');
  END IF;
  sealed := 0;
  -- Oldest insert first: one customer's changes were queued one after another under its
  -- row lock, so they keep their order.
  FOR q IN SELECT * FROM history_unsealed WHERE tenant_id = p_tenant
           ORDER BY seq LIMIT p_max LOOP
    queued := queued || q.history_id;
    tos := tos || q.to_stage;
    froms := froms || q.from_stage;
    sealed := sealed + 1;
    CONTINUE WHEN q.customer_id IS NULL;  -- an older gateway's: linked at its commit
    h := NULL;
    h.id := q.history_id;
    h.tenant_id := q.tenant_id;
    h.customer_id := q.customer_id;
    h.version := q.version;
    h.from_stage := q.from_stage;
    h.to_stage := q.to_stage;
    h.changed_at := q.changed_at;
    h.changed_by := q.changed_by;
    h.reason_code := q.reason_code;
    h.source := q.source;
    h.config_version := q.config_version;
    h.seq := nextval(seq_of_history);
    pos := pos + 1;
    h.chain_pos := pos;
    h.prev_hash := prev;
    h.row_hash := c360_history_digest(prev, h);
    prev := h.row_hash;
    hs := hs || h;
    oldest := LEAST(oldest, h.changed_at);
    CONTINUE WHEN q.outbox_id IS NULL;
    o := NULL;
    o.id := q.outbox_id;
    o.tenant_id := q.tenant_id;
    o.topic := q.topic;
    o.key := q.key;
    o.payload := jsonb_set(q.event, '{data,chain}', jsonb_build_object(
      'position', h.chain_pos, 'hash', encode(h.row_hash, 'hex')));
    o.created_at := q.created_at;
    o.history_seq := h.seq;
    o.history_id := h.id;
    o.traceparent := q.traceparent;
    o.tracestate := q.tracestate;
    o.webhooks_fanned_at := now();
    os := os || o;
  END LOOP;
  IF sealed = 0 THEN
    RETURN;
  END IF;
  INSERT INTO lifecycle_history SELECT * FROM unnest(hs);
  INSERT INTO outbox SELECT * FROM unnest(os);
  DELETE FROM history_unsealed WHERE history_id = ANY(queued);
  IF EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.tenant_id = p_tenant AND e.active) THEN
    SELECT array_agg((b).id) INTO boxes FROM unnest(os) b;
    PERFORM c360_fan_out(boxes, false);
  END IF;
  -- Sorted, as every writer of count rows locks them.
  INSERT INTO stage_counts AS c (tenant_id, stage, count)
  SELECT p_tenant, stage, sum(d) FROM (
    SELECT unnest(tos) AS stage, 1 AS d
    UNION ALL SELECT f, -1 FROM unnest(froms) f WHERE f IS NOT NULL
  ) x GROUP BY stage HAVING sum(d) <> 0 ORDER BY stage
  ON CONFLICT (tenant_id, stage) DO UPDATE SET count = c.count + EXCLUDED.count;
  IF cardinality(hs) > 0 THEN
    INSERT INTO history_heads (tenant_id, position, head, updated_at)
    VALUES (p_tenant, pos, prev, now())
    ON CONFLICT (tenant_id) DO UPDATE
      SET position = EXCLUDED.position, head = EXCLUDED.head, updated_at = EXCLUDED.updated_at;
  END IF;
  -- The audit events just became publishable: wake the relays (once per batch).
  PERFORM pg_notify('c360_outbox', '');
  oldest_ms := extract(epoch FROM clock_timestamp() - oldest) * 1000;
END
$$
"""


def _seal_of_0015() -> str:
    v15 = import_module("customer360.data.migrations.versions.0015_seal_cheaper_per_row")
    return str(v15._seal(once=True))


def _link(skip_deferred: bool) -> str:
    """The commit-time link of 0011: skipping the rows of a writer that defers, or not."""
    v11 = import_module("customer360.data.migrations.versions.0011_chain_sealed_after_commit")
    return str(v11._link(skip=skip_deferred))


def _seal_everything() -> None:
    """Every queued change sealed by the seal in place (system scope, this transaction)."""
    op.execute("SELECT set_config('app.scope', 'system', true)")
    op.execute(
        "SELECT c360_seal(tenant_id, 2147483647) FROM "
        "(SELECT DISTINCT tenant_id FROM history_unsealed) t"
    )


def upgrade() -> None:
    # No writer queues meanwhile: what is queued now is sealed by 0015's seal, which knows
    # this shape of the queue.
    op.execute("LOCK TABLE history_unsealed IN EXCLUSIVE MODE")
    _seal_everything()
    for column in _QUEUED:
        op.add_column("history_unsealed", column)
    op.create_check_constraint("whole", "history_unsealed", _WHOLE)
    op.create_check_constraint("event", "history_unsealed", _EVENT)
    # An older gateway's queue rows name their seq; this gateway's draw it here.
    op.execute(
        "ALTER TABLE history_unsealed ALTER COLUMN seq SET DEFAULT "
        "nextval(pg_get_serial_sequence('lifecycle_history', 'seq')::regclass)"
    )
    op.execute(ALL_HISTORY)
    op.execute(REFUSE_LINKS)
    op.execute("DROP TRIGGER lifecycle_history_chain ON lifecycle_history")
    op.execute(_CHAIN_TRIGGER)
    op.execute(_link(skip_deferred=False))
    op.execute("DROP TRIGGER lifecycle_history_link ON lifecycle_history")
    op.execute(_LINK_TRIGGER)
    op.execute(SEAL)


def downgrade() -> None:
    op.execute("LOCK TABLE history_unsealed IN EXCLUSIVE MODE")
    _seal_everything()
    op.execute(_seal_of_0015())
    op.execute("DROP TRIGGER lifecycle_history_link ON lifecycle_history")
    op.execute(_link(skip_deferred=True))
    op.execute(
        "CREATE CONSTRAINT TRIGGER lifecycle_history_link AFTER INSERT ON lifecycle_history "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION c360_history_link()"
    )
    op.execute("DROP TRIGGER lifecycle_history_chain ON lifecycle_history")
    v6 = import_module("customer360.data.migrations.versions.0006_chain_at_commit")
    op.execute(v6.UNLINKED)
    op.execute(
        "CREATE TRIGGER lifecycle_history_chain BEFORE INSERT ON lifecycle_history "
        "FOR EACH ROW EXECUTE FUNCTION c360_history_chain()"
    )
    op.execute("DROP VIEW lifecycle_history_all")
    op.execute("ALTER TABLE history_unsealed ALTER COLUMN seq DROP DEFAULT")
    op.drop_constraint("event", "history_unsealed", type_="check")
    op.drop_constraint("whole", "history_unsealed", type_="check")
    for column in reversed(_QUEUED):
        op.drop_column("history_unsealed", column.name)
