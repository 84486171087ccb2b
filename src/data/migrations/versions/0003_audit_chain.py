"""Tamper-evident lifecycle history: append-only, hash-chained per tenant.

Each history row gets its tenant's next chain position and
`row_hash = sha256(prev_hash || canonical(row))`. A BEFORE INSERT trigger assigns both under
a per-tenant advisory lock held to commit, so positions follow commit order even with
concurrent writers (ordering by id or by a sequence taken before the lock would not). The
history `seq`, the tenant-wide replay position for subscriptions, is drawn under the same
lock for the same reason: a resume `after` a position can then never miss a change that
committed later with a lower number.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# jsonb's text form is canonical for given values; timestamps go in as epoch microseconds so
# the session's TimeZone and DateStyle cannot change a digest.
DIGEST = """
CREATE FUNCTION c360_history_digest(prev bytea, h lifecycle_history) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT sha256(prev || convert_to(jsonb_build_array(
    h.chain_pos, h.seq, h.id, h.tenant_id, h.customer_id, h.version, h.from_stage,
    h.to_stage, (extract(epoch FROM h.changed_at) * 1000000)::bigint, h.changed_by,
    h.reason_code, h.source, h.config_version)::text, 'UTF8'))
$$
"""

# SECURITY DEFINER: the application's role may read the chain heads but never write them.
CHAIN = """
CREATE FUNCTION c360_history_chain() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
  pos bigint;
  prev bytea;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended('history-chain:' || NEW.tenant_id, 0));
  -- A fresh snapshot per statement (READ COMMITTED): sees the last holder's committed head.
  SELECT position, head INTO pos, prev FROM history_heads WHERE tenant_id = NEW.tenant_id;
  IF NOT FOUND THEN
    pos := 0;
    prev := decode(repeat('00', 32), 'hex');
  END IF;
  NEW.seq := nextval(pg_get_serial_sequence('lifecycle_history', 'seq'));
  NEW.chain_pos := pos + 1;
  NEW.prev_hash := prev;
  NEW.row_hash := c360_history_digest(prev, NEW);
  INSERT INTO history_heads AS h (tenant_id, position, head, updated_at)
  VALUES (NEW.tenant_id, NEW.chain_pos, NEW.row_hash, now())
  ON CONFLICT (tenant_id) DO UPDATE
    SET position = EXCLUDED.position, head = EXCLUDED.head, updated_at = EXCLUDED.updated_at;
  RETURN NEW;
END
$$
"""

APPEND_ONLY = """
CREATE FUNCTION c360_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
    USING ERRCODE = 'insufficient_privilege';
END
$$
"""

BACKFILL = """
DO $$
DECLARE
  r lifecycle_history%ROWTYPE;
  cur text := NULL;
  pos bigint;
  prev bytea;
BEGIN
  FOR r IN SELECT * FROM lifecycle_history ORDER BY tenant_id, seq LOOP
    IF cur IS DISTINCT FROM r.tenant_id THEN
      IF cur IS NOT NULL THEN
        INSERT INTO history_heads VALUES (cur, pos, prev, now());
      END IF;
      cur := r.tenant_id;
      pos := 0;
      prev := decode(repeat('00', 32), 'hex');
    END IF;
    pos := pos + 1;
    r.chain_pos := pos;
    UPDATE lifecycle_history
      SET chain_pos = pos, prev_hash = prev, row_hash = c360_history_digest(prev, r)
      WHERE id = r.id RETURNING row_hash INTO prev;
  END LOOP;
  IF cur IS NOT NULL THEN
    INSERT INTO history_heads VALUES (cur, pos, prev, now());
  END IF;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        "history_heads",
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("head", sa.LargeBinary(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_history_heads")),
    )
    op.add_column("lifecycle_history", sa.Column("chain_pos", sa.BigInteger()))
    op.add_column("lifecycle_history", sa.Column("prev_hash", sa.LargeBinary()))
    op.add_column("lifecycle_history", sa.Column("row_hash", sa.LargeBinary()))
    op.execute(DIGEST)
    op.execute(BACKFILL)
    for column in ("chain_pos", "prev_hash", "row_hash"):
        op.alter_column("lifecycle_history", column, nullable=False)
    op.create_index(
        "uq_lifecycle_history_tenant_id_chain_pos",
        "lifecycle_history",
        ["tenant_id", "chain_pos"],
        unique=True,
    )
    op.execute(CHAIN)
    op.execute(
        "CREATE TRIGGER lifecycle_history_chain BEFORE INSERT ON lifecycle_history "
        "FOR EACH ROW EXECUTE FUNCTION c360_history_chain()"
    )
    op.execute(APPEND_ONLY)
    # The owner (and a superuser not deliberately disabling triggers) is refused too.
    op.execute(
        "CREATE TRIGGER lifecycle_history_append_only BEFORE UPDATE OR DELETE "
        "ON lifecycle_history FOR EACH ROW EXECUTE FUNCTION c360_append_only()"
    )
    op.execute(
        "CREATE TRIGGER lifecycle_history_no_truncate BEFORE TRUNCATE "
        "ON lifecycle_history FOR EACH STATEMENT EXECUTE FUNCTION c360_append_only()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER lifecycle_history_no_truncate ON lifecycle_history")
    op.execute("DROP TRIGGER lifecycle_history_append_only ON lifecycle_history")
    op.execute("DROP TRIGGER lifecycle_history_chain ON lifecycle_history")
    op.execute("DROP FUNCTION c360_append_only()")
    op.execute("DROP FUNCTION c360_history_chain()")
    op.execute("DROP FUNCTION c360_history_digest(bytea, lifecycle_history)")
    op.drop_index("uq_lifecycle_history_tenant_id_chain_pos", table_name="lifecycle_history")
    op.drop_column("lifecycle_history", "row_hash")
    op.drop_column("lifecycle_history", "prev_hash")
    op.drop_column("lifecycle_history", "chain_pos")
    op.drop_table("history_heads")
