"""A tenant's seal fans its audit events out to the tenant's webhook endpoints.

The webhook sink read every sealed audit event back and updated its outbox row once more to
mark it fanned out: with the insert, the seal and the Redis sink's mark, a fourth version of
each outbox row, five index entries each (docs/BENCHMARKS.md, session 13: the sink's read
and mark were 12% of PostgreSQL's time under bulk writes). `c360_seal` now marks the rows
fanned out in the very update that seals them, and makes their deliveries in the same
transaction, from the sealed payload, as the sink did from the outbox.

`c360_fan_out` holds the matching rule once, for the seal and for the sink, which still
fans out what no seal did: rows linked at commit (the seed's copy, older gateways).
Endpoints still see the events written after they were registered (`created_at`).

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from importlib import import_module

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels = None
depends_on = None

# Invoker's rights: the relay's connection (system scope) for the sink, the seal's owner.
FAN_OUT = """
CREATE FUNCTION c360_fan_out(p_outbox bigint[], p_mark boolean) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO webhook_deliveries (tenant_id, id, endpoint_id, outbox_id, customer_id, event_id,
                                  event_type, payload, status, attempts, next_attempt_at,
                                  created_at)
  SELECT o.tenant_id, gen_random_uuid(), e.id, o.id, o.key, o.payload->>'id', o.topic,
         o.payload, 'pending', 0, now(), now()
  FROM outbox o
  JOIN webhook_endpoints e
    ON e.tenant_id = o.tenant_id AND e.active AND e.created_at <= o.created_at
  WHERE o.id = ANY(p_outbox) AND o.topic = 'audit.lifecycle.updated'
    AND (cardinality(e.event_types) = 0 OR o.topic = ANY(e.event_types))
    AND (cardinality(e.stages) = 0 OR o.payload->'data'->>'to_stage' = ANY(e.stages))
  ON CONFLICT (tenant_id, endpoint_id, outbox_id) DO NOTHING;
  IF p_mark THEN
    UPDATE outbox SET webhooks_fanned_at = now() WHERE id = ANY(p_outbox);
  END IF;
END
$$
"""

_SEALED_BEFORE = """  UPDATE outbox o
    SET history_seq = u.seq,
        payload = jsonb_set(o.payload, '{data,chain}', jsonb_build_object(
          'position', u.pos, 'hash', encode(u.hash, 'hex')))
    FROM unnest(ids, seqs, poss, hashes) AS u(id, seq, pos, hash)
    WHERE o.history_id = u.id;
"""
# The audit events' rows: sealed, and fanned out in the same update. The deliveries only
# where the tenant has an active endpoint (most have none: no lookups then).
_SEALED = """  WITH sealed AS (
    UPDATE outbox o
      SET history_seq = u.seq,
          payload = jsonb_set(o.payload, '{data,chain}', jsonb_build_object(
            'position', u.pos, 'hash', encode(u.hash, 'hex'))),
          webhooks_fanned_at = now()
      FROM unnest(ids, seqs, poss, hashes) AS u(id, seq, pos, hash)
      WHERE o.history_id = u.id
      RETURNING o.id
  )
  SELECT array_agg(id) INTO boxes FROM sealed;
  IF EXISTS (SELECT 1 FROM webhook_endpoints e WHERE e.tenant_id = p_tenant AND e.active) THEN
    PERFORM c360_fan_out(boxes, false);
  END IF;
"""


def _seal(fan_out: bool) -> str:
    """0011's seal, as it was or fanning out: one definition of the chain."""
    seal: str = import_module(
        "customer360.data.migrations.versions.0011_chain_sealed_after_commit"
    ).SEAL
    seal = seal.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
    if not fan_out:
        return seal
    assert seal.count(_SEALED_BEFORE) == 1, "0011's seal is not the one this revision edits"
    seal = seal.replace(_SEALED_BEFORE, _SEALED)
    return seal.replace("  oldest timestamptz;\n", "  oldest timestamptz;\n  boxes bigint[];\n", 1)


def upgrade() -> None:
    op.execute(FAN_OUT)
    op.execute(_seal(fan_out=True))


def downgrade() -> None:
    op.execute(_seal(fan_out=False))
    op.execute("DROP FUNCTION c360_fan_out(bigint[], boolean)")
