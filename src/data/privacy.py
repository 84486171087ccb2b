"""GDPR erasure and sealing of plaintext left from before encryption (`c360 erase`, `migrate`).

Erasure keeps every lifecycle row (history stays countable and its chain verifies): it blanks
the customer's personal columns, and for a whole tenant also destroys the tenant's data key,
so every sealed value it ever wrote, in backups too, can no longer be opened.
"""

from __future__ import annotations

import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from .customers import CACHE_TOPIC, ERASED_NAME
from .keys import keys_of
from .scope import system_scope, tenant_scope

_ERASE = text(
    f"""
WITH gone AS (
  UPDATE customers SET name = '{ERASED_NAME}', email = NULL, phone = NULL, email_bidx = NULL,
         erased_at = COALESCE(erased_at, now()), updated_at = GREATEST(updated_at, now())
  WHERE tenant_id = :t AND (CAST(:c AS uuid) IS NULL OR id = :c)
  RETURNING id
),
box AS (
  -- every process's cache forgets the profile, through the outbox like any other change
  INSERT INTO outbox (tenant_id, topic, key, payload)
  SELECT :t, '{CACHE_TOPIC}', id::text, '{{}}' FROM gone
)
SELECT count(*) AS n, pg_notify('c360_outbox', '') FROM gone
"""  # noqa: S608 (module constants only)
)
_DESTROY = text(
    "UPDATE tenant_keys SET wrapped = NULL, destroyed_at = now() "
    "WHERE tenant_id = :t AND wrapped IS NOT NULL"
)


async def erase(engine: AsyncEngine, tenant_id: str, customer_id: uuid.UUID | None) -> int:
    """Erase one customer, or the whole tenant when `customer_id` is None; returns how many."""
    async with engine.begin() as conn:
        await tenant_scope(conn, tenant_id)
        n = int((await conn.execute(_ERASE, {"t": tenant_id, "c": customer_id})).scalar_one())
        if customer_id is None:
            await conn.execute(_DESTROY, {"t": tenant_id})
    keys_of(engine).forget(tenant_id)
    return n


async def seal_plaintext(engine: AsyncEngine) -> int:
    """Seal email and phone values still stored in plaintext; returns rows sealed."""
    keys = keys_of(engine)
    sealed = 0
    while True:
        async with engine.begin() as conn:
            await system_scope(conn)
            rows = (
                await conn.execute(
                    text(
                        "SELECT tenant_id, id, email, phone FROM customers "
                        "WHERE (email NOT LIKE 'v1.%' OR phone NOT LIKE 'v1.%') "
                        "LIMIT 1000 FOR UPDATE SKIP LOCKED"
                    )
                )
            ).all()
            if not rows:
                return sealed
            for r in rows:
                cipher = await keys.for_write(conn, r.tenant_id)

                def seal(value: str | None, column: str) -> str | None:
                    done = value is None or value.startswith("v1.")
                    return value if done else cipher.seal(value, r.id, column)  # noqa: B023

                await conn.execute(
                    text(
                        "UPDATE customers SET email = :e, phone = :p, "
                        "email_bidx = COALESCE(email_bidx, :b) WHERE tenant_id = :t AND id = :id"
                    ),
                    {
                        "e": seal(r.email, "email"),
                        "p": seal(r.phone, "phone"),
                        "b": None
                        if r.email is None or r.email.startswith("v1.")
                        else cipher.blind(r.email),
                        "t": r.tenant_id,
                        "id": r.id,
                    },
                )
            sealed += len(rows)
