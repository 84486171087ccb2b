"""The history chain is linked at commit, not at insert.

Revision 0003 took the tenant's chain lock when a history row was inserted and held it to
commit, client round trips included: every change of a tenant waited for the previous one's
statement, its COMMIT and the scheduling of its process in between (one busy tenant managed
about 170 changes a second). Now a row is inserted unlinked and a deferred constraint
trigger links it when its transaction commits: the lock is held only from then until the
commit is durable, inside the server. Positions and replay `seq` still follow commit order,
which is what the chain and resuming subscribers need; the audit event in the outbox gets
its chain head and `seq` in the same step.

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# At insert: nothing the writer sends for the chain is kept; the commit step decides.
UNLINKED = """
CREATE OR REPLACE FUNCTION c360_history_chain() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.chain_pos := NULL;
  NEW.prev_hash := NULL;
  NEW.row_hash := NULL;
  RETURN NEW;
END
$$
"""

# At commit, row by row in insertion order. SECURITY DEFINER: the application's role can
# neither update history nor write chain heads itself.
LINK = """
CREATE FUNCTION c360_history_link() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  pos bigint;
  prev bytea;
  s bigint;
  h lifecycle_history%ROWTYPE;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended('history-chain:' || NEW.tenant_id, 0));
  -- A fresh snapshot per statement (READ COMMITTED): sees the last holder's committed head.
  SELECT position, head INTO pos, prev FROM history_heads WHERE tenant_id = NEW.tenant_id;
  IF NOT FOUND THEN
    pos := 0;
    prev := decode(repeat('00', 32), 'hex');
  END IF;
  s := nextval(pg_get_serial_sequence('lifecycle_history', 'seq'));
  h := NEW;
  h.seq := s;
  h.chain_pos := pos + 1;
  h.prev_hash := prev;
  h.row_hash := c360_history_digest(prev, h);
  UPDATE lifecycle_history
    SET seq = h.seq, chain_pos = h.chain_pos, prev_hash = h.prev_hash, row_hash = h.row_hash
    WHERE id = NEW.id;
  INSERT INTO history_heads (tenant_id, position, head, updated_at)
  VALUES (NEW.tenant_id, h.chain_pos, h.row_hash, now())
  ON CONFLICT (tenant_id) DO UPDATE
    SET position = EXCLUDED.position, head = EXCLUDED.head, updated_at = EXCLUDED.updated_at;
  UPDATE outbox
    SET history_seq = s,
        payload = jsonb_set(payload, '{data,chain}', jsonb_build_object(
          'position', h.chain_pos, 'hash', encode(h.row_hash, 'hex')))
    WHERE history_id = NEW.id;
  RETURN NULL;
END
$$
"""

# Append-only, except for the one update the commit step makes to a row not yet linked
# (pg_trigger_depth() > 1: issued from inside a trigger, never by a client statement).
APPEND_ONLY = """
CREATE OR REPLACE FUNCTION c360_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' AND OLD.row_hash IS NULL AND pg_trigger_depth() > 1 THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$$
"""


def upgrade() -> None:
    for column in ("chain_pos", "prev_hash", "row_hash"):
        op.alter_column("lifecycle_history", column, nullable=True)
    op.add_column("outbox", sa.Column("history_id", sa.UUID()))
    op.create_index(
        "ix_outbox_history_id",
        "outbox",
        ["history_id"],
        postgresql_where=sa.text("history_id IS NOT NULL"),
    )
    op.execute(UNLINKED)
    op.execute(LINK)
    op.execute(APPEND_ONLY)
    op.execute(
        "CREATE CONSTRAINT TRIGGER lifecycle_history_link AFTER INSERT ON lifecycle_history "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION c360_history_link()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER lifecycle_history_link ON lifecycle_history")
    op.execute("DROP FUNCTION c360_history_link()")
    op.drop_index("ix_outbox_history_id", table_name="outbox")
    op.drop_column("outbox", "history_id")
    # 0003's functions, as they were
    from importlib import import_module

    v3 = import_module("customer360.data.migrations.versions.0003_audit_chain")
    op.execute(v3.CHAIN.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    op.execute(v3.APPEND_ONLY.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    for column in ("chain_pos", "prev_hash", "row_hash"):
        op.alter_column("lifecycle_history", column, nullable=False)
