"""The chain is sealed after commit, in batches, and stage counts move with it.

Revision 0006 linked each history row at its commit, under the tenant's chain lock, and the
write statement added its changes to the tenant's stage-count rows: two locks every change
of a tenant held through its WAL flush, so one tenant's writes ran one after another
(docs/WRITE_PATH.md measures 426-733/s in PostgreSQL alone). Now a writer that says so
(`c360.seal = 'deferred'`, set by the write statement itself) leaves its rows unlinked and
its counts alone; `c360_seal` links the committed unlinked rows of a tenant in one
transaction: each row's replay `seq` drawn anew (so a row reaches replay above every `seq`
seen before it), the next positions, the same digest into the same columns, the head, the
audit events' chain fields, and the rows' count deltas. The summary is `stage_counts` plus
the deltas of the rows not yet sealed: exact in any snapshot.

The rows awaiting their seal are queued in `history_unsealed` (written by the same
statement as the history row, deleted by the seal): a small table autovacuum keeps small.
A partial index over the history itself was tried first; every sealed row left a dead entry
in it until the whole table was vacuumed (20% of it dead), and after 200,000 sealed changes
the summary's read of "the unsealed rows" took 80 ms scanning them.

Writers that do not say so (older gateways during a rolling update, the seed's bulk copy)
are linked at commit and counted by their statement, as before; both paths take the same
chain lock, so the chain stays one.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from importlib import import_module

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels = None
depends_on = None

RULE = (
    "tenant_id = current_setting('app.tenant_id', true) "
    "OR current_setting('app.scope', true) = 'system'"
)

# Append-only, except filling the links of a row not yet linked with its contents unchanged
# (the commit-time link and c360_seal; the application's role has no UPDATE on history at
# all, and this binds the owner too). A wrong link is named by `c360 audit verify`.
APPEND_ONLY = """
CREATE OR REPLACE FUNCTION c360_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND OLD.row_hash IS NULL
     AND (NEW.id, NEW.tenant_id, NEW.customer_id, NEW.version, NEW.from_stage, NEW.to_stage,
          NEW.changed_at, NEW.changed_by, NEW.reason_code, NEW.source, NEW.config_version)
         IS NOT DISTINCT FROM
         (OLD.id, OLD.tenant_id, OLD.customer_id, OLD.version, OLD.from_stage, OLD.to_stage,
          OLD.changed_at, OLD.changed_by, OLD.reason_code, OLD.source, OLD.config_version)
  THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$$
"""

# 0006's link, skipped for the rows of a transaction that leaves them to the sealer.
SKIP_DEFERRED = (
    "  IF current_setting('c360.seal', true) = 'deferred' THEN\n    RETURN NULL;\n  END IF;\n"
)

SEAL = """
CREATE FUNCTION c360_seal(p_tenant text, p_max int, OUT sealed int, OUT oldest_ms float8)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp
-- The batch's rows are found by key, one index probe each, whatever the tables' size.
SET enable_hashjoin = off SET enable_mergejoin = off AS $$
DECLARE
  pos bigint;
  prev bytea;
  h lifecycle_history%ROWTYPE;
  ids uuid[] := '{}';
  seqs bigint[] := '{}';
  poss bigint[] := '{}';
  prevs bytea[] := '{}';
  hashes bytea[] := '{}';
  tos text[] := '{}';
  froms text[] := '{}';
  oldest timestamptz;
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
  -- Oldest insert first: one customer's changes were inserted one after another under its
  -- row lock, so they keep their order.
  FOR h IN SELECT l.* FROM history_unsealed u JOIN lifecycle_history l ON l.id = u.history_id
           WHERE u.tenant_id = p_tenant AND l.chain_pos IS NULL
           ORDER BY u.seq LIMIT p_max LOOP
    h.seq := nextval(pg_get_serial_sequence('lifecycle_history', 'seq'));
    pos := pos + 1;
    h.chain_pos := pos;
    h.prev_hash := prev;
    h.row_hash := c360_history_digest(prev, h);
    prev := h.row_hash;
    ids := ids || h.id;
    seqs := seqs || h.seq;
    poss := poss || h.chain_pos;
    prevs := prevs || h.prev_hash;
    hashes := hashes || h.row_hash;
    tos := tos || h.to_stage;
    froms := froms || h.from_stage;
    oldest := LEAST(oldest, h.changed_at);
    sealed := sealed + 1;
  END LOOP;
  IF sealed = 0 THEN
    RETURN;
  END IF;
  UPDATE lifecycle_history l
    SET seq = u.seq, chain_pos = u.pos, prev_hash = u.prev, row_hash = u.hash
    FROM unnest(ids, seqs, poss, prevs, hashes) AS u(id, seq, pos, prev, hash)
    WHERE l.id = u.id;
  DELETE FROM history_unsealed WHERE history_id = ANY(ids);
  UPDATE outbox o
    SET history_seq = u.seq,
        payload = jsonb_set(o.payload, '{data,chain}', jsonb_build_object(
          'position', u.pos, 'hash', encode(u.hash, 'hex')))
    FROM unnest(ids, seqs, poss, hashes) AS u(id, seq, pos, hash)
    WHERE o.history_id = u.id;
  -- Sorted, as every writer of count rows locks them.
  INSERT INTO stage_counts AS c (tenant_id, stage, count)
  SELECT p_tenant, stage, sum(d) FROM (
    SELECT unnest(tos) AS stage, 1 AS d
    UNION ALL SELECT f, -1 FROM unnest(froms) f WHERE f IS NOT NULL
  ) x GROUP BY stage HAVING sum(d) <> 0 ORDER BY stage
  ON CONFLICT (tenant_id, stage) DO UPDATE SET count = c.count + EXCLUDED.count;
  INSERT INTO history_heads (tenant_id, position, head, updated_at)
  VALUES (p_tenant, pos, prev, now())
  ON CONFLICT (tenant_id) DO UPDATE
    SET position = EXCLUDED.position, head = EXCLUDED.head, updated_at = EXCLUDED.updated_at;
  -- The audit events just became publishable: wake the relays (once per batch).
  PERFORM pg_notify('c360_outbox', '');
  oldest_ms := extract(epoch FROM clock_timestamp() - oldest) * 1000;
END
$$
"""


def _link(skip: bool) -> str:
    link: str = import_module("customer360.data.migrations.versions.0006_chain_at_commit").LINK
    link = link.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
    if skip:
        link = link.replace("BEGIN\n", "BEGIN\n" + SKIP_DEFERRED, 1)
    return link


def upgrade() -> None:
    # One row per committed change awaiting its seal: its insert order and its count delta.
    op.create_table(
        "history_unsealed",
        sa.Column("history_id", sa.UUID(), primary_key=True),
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("from_stage", sa.Text()),
        sa.Column("to_stage", sa.Text(), nullable=False),
    )
    op.create_index("ix_history_unsealed_tenant_seq", "history_unsealed", ["tenant_id", "seq"])
    op.execute("ALTER TABLE history_unsealed ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE history_unsealed FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY tenant_isolation ON history_unsealed USING ({RULE}) WITH CHECK ({RULE})"
    )
    op.execute(APPEND_ONLY)
    op.execute(_link(skip=True))
    op.execute(SEAL)


def downgrade() -> None:
    # Nothing may stay unlinked once only the commit-time link is left (every tenant's).
    op.execute("SELECT set_config('app.scope', 'system', true)")
    op.execute(
        "SELECT c360_seal(tenant_id, 2147483647) FROM "
        "(SELECT DISTINCT tenant_id FROM history_unsealed) t"
    )
    op.execute("DROP FUNCTION c360_seal(text, int)")
    op.execute(_link(skip=False))
    v6 = import_module("customer360.data.migrations.versions.0006_chain_at_commit")
    op.execute(v6.APPEND_ONLY)
    op.drop_table("history_unsealed")
