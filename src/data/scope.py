"""Row-level security scope (migration 0005): whose rows this transaction may touch.

Both settings are transaction-local (`set_config(..., true)`): they end with the transaction,
so a pooled connection never carries one request's tenant into the next request.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

TENANT_SQL = "set_config('app.tenant_id', :t, true)"
_TENANT = text(f"SELECT {TENANT_SQL}")
_SYSTEM = text("SELECT set_config('app.scope', 'system', true)")


async def tenant_scope(conn: AsyncConnection, tenant_id: str) -> None:
    await conn.execute(_TENANT, {"t": tenant_id})


async def system_scope(conn: AsyncConnection) -> None:
    """For work that spans tenants by design: the outbox relay, audit verify, key rotation."""
    await conn.execute(_SYSTEM)
