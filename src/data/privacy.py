"""GDPR erasure and sealing of plaintext left from before encryption (`c360 erase`, `migrate`).

Erasure keeps every lifecycle row (history stays countable and its chain verifies): it blanks
the customer's personal columns, and for a whole tenant also destroys the tenant's data key,
so every sealed value it ever wrote, in backups too, can no longer be opened.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from . import outbox
from .customers import ERASED_NAME
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
  {outbox.INSERT}
  SELECT :t, '{outbox.CACHE_TOPIC}', id::text, '{{}}' FROM gone
)
SELECT count(*) AS n, {outbox.WAKE} FROM gone
"""  # noqa: S608 (module constants only)
)
# What a sealed value looks like: `v1.` and unpadded-or-padded base64url.
SEALED_SHAPE = "^v1\\.[A-Za-z0-9_-]+=*$"
_DESTROY = text(
    "UPDATE tenant_keys SET wrapped = NULL, destroyed_at = now() "
    "WHERE tenant_id = :t AND wrapped IS NOT NULL"
)


async def erase(conn: AsyncConnection, tenant_id: str, customer_id: uuid.UUID | None) -> int:
    """Erase one customer, or the whole tenant when `customer_id` is None, in the caller's
    transaction; returns how many. Once it commits, the caller forgets the tenant's key."""
    await tenant_scope(conn, tenant_id)
    n = int((await conn.execute(_ERASE, {"t": tenant_id, "c": customer_id})).scalar_one())
    if customer_id is None:
        await conn.execute(_DESTROY, {"t": tenant_id})
    return n


async def seal_plaintext(engine: AsyncEngine) -> int:
    """Seal email and phone values still stored in plaintext; returns customers sealed.

    Rows whose values cannot be tokens (an `@`, a space, a `+`) are read; of those, a value
    is taken as sealed only if it opens, so plaintext that merely starts like a token
    (`v1.bob@example.com`) is sealed too."""
    keys = keys_of(engine)
    sealed = 0
    last: tuple[str, Any] = ("", uuid.UUID(int=0))
    while True:
        async with engine.begin() as conn:
            await system_scope(conn)
            rows = (
                await conn.execute(
                    text(
                        "SELECT tenant_id, id, email, phone FROM customers "
                        "WHERE (tenant_id, id) > (:t, :id) "
                        "AND (email !~ :token OR phone !~ :token) "
                        "ORDER BY tenant_id, id LIMIT 1000 FOR UPDATE"
                    ),
                    {"t": last[0], "id": last[1], "token": SEALED_SHAPE},
                )
            ).all()
            if not rows:
                return sealed
            last = (rows[-1].tenant_id, rows[-1].id)
            for r in rows:
                cipher = await keys.for_write(conn, r.tenant_id)
                values = {"email": r.email, "phone": r.phone}
                plain = {
                    f: v
                    for f, v in values.items()
                    if v is not None and cipher.open(v, r.id, f) is None
                }
                if not plain:
                    continue
                params = {f: cipher.seal(v, r.id, f) for f, v in plain.items()}
                sets = ", ".join(f"{f} = :{f}" for f in params)
                if "email" in plain:
                    sets += ", email_bidx = :bidx"
                    params["bidx"] = cipher.blind(plain["email"])  # type: ignore[assignment]
                await conn.execute(
                    # Column names come from the fixed pair above, never from input.
                    text(f"UPDATE customers SET {sets} WHERE tenant_id = :t AND id = :id"),  # noqa: S608
                    {**params, "t": r.tenant_id, "id": r.id},
                )
                sealed += 1
