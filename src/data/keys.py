"""Per-tenant data keys: created on first use, cached unwrapped briefly, rotated, destroyed.

The keys travel with the engine (`make_engine(..., keys=...)`, read back with `keys_of`), so
every connection the data layer opens can seal and open fields without the callers of the
unit of work or the readers knowing about encryption.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .crypto import Keyring, TenantCipher
from .scope import system_scope

OPTION = "c360_keys"
# `mine`: the row was written by the caller's own, not yet committed, transaction.
_GET = text(
    "SELECT kek_id, wrapped, "
    "xmin::text::bigint = txid_current_if_assigned() % 4294967296 AS mine "
    "FROM tenant_keys WHERE tenant_id = :t"
)
_CREATE = text(
    "INSERT INTO tenant_keys (tenant_id, kek_id, wrapped) VALUES (:t, :k, :w) "
    "ON CONFLICT (tenant_id) DO NOTHING"
)


class TenantErased(Exception):
    """The tenant's data key was destroyed: its personal data can no longer be written."""


class TenantKeys:
    def __init__(self, keyring: Keyring, ttl: float = 30.0) -> None:
        self.keyring = keyring
        # Unwrapped keys stay in memory `ttl` seconds: a tenant erased elsewhere stops being
        # readable here within that time.
        self.ttl = ttl
        self._cache: dict[str, tuple[float, TenantCipher | None]] = {}

    def cached(self, tenant_id: str) -> tuple[TenantCipher | None] | None:
        """(cipher,) when known here and fresh, else None: spares readers a connection."""
        hit = self._cache.get(tenant_id)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return (hit[1],)
        return None

    def forget(self, tenant_id: str) -> None:
        self._cache.pop(tenant_id, None)

    async def _load(
        self, conn: AsyncConnection, tenant_id: str
    ) -> tuple[bool, TenantCipher | None]:
        """(cacheable, cipher): no key yet, or a key that may still roll back with the
        caller's transaction, is not for the cache."""
        row = (await conn.execute(_GET, {"t": tenant_id})).first()
        if row is None:
            return False, None
        cacheable = not row.mine
        if row.wrapped is None:
            return cacheable, None
        key = self.keyring.unwrap(tenant_id, row.kek_id, bytes(row.wrapped))
        return cacheable, TenantCipher(tenant_id, key)

    async def for_read(self, conn: AsyncConnection, tenant_id: str) -> TenantCipher | None:
        """The tenant's cipher, or None when it has none (never wrote) or was erased."""
        now = time.monotonic()
        hit = self._cache.get(tenant_id)
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        cacheable, cipher = await self._load(conn, tenant_id)
        if cacheable:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[tenant_id] = (now, cipher)
        return cipher

    async def for_write(self, conn: AsyncConnection, tenant_id: str) -> TenantCipher:
        """The tenant's cipher, creating its data key on first use (race-safe)."""
        cipher = await self.for_read(conn, tenant_id)
        if cipher is not None:
            return cipher
        kid, wrapped = self.keyring.wrap(tenant_id, secrets.token_bytes(32))
        # A no-op when a key row exists, live (a concurrent first writer won) or destroyed.
        await conn.execute(_CREATE, {"t": tenant_id, "k": kid, "w": wrapped})
        _, cipher = await self._load(conn, tenant_id)
        if cipher is None:
            raise TenantErased(f"tenant {tenant_id} was erased")
        return cipher

    async def rotate(self, engine: AsyncEngine) -> int:
        """Re-wrap every live data key under the primary master key; returns how many."""
        primary = self.keyring.primary
        done = 0
        async with engine.connect() as conn:
            await system_scope(conn)
            rows = (
                await conn.execute(
                    text(
                        "SELECT tenant_id, kek_id, wrapped FROM tenant_keys "
                        "WHERE wrapped IS NOT NULL AND kek_id <> :k"
                    ),
                    {"k": primary},
                )
            ).all()
        for r in rows:
            key = self.keyring.unwrap(r.tenant_id, r.kek_id, bytes(r.wrapped))
            kid, wrapped = self.keyring.wrap(r.tenant_id, key)
            # One short transaction per tenant, guarded by the old wrap: online, and a
            # concurrent erase or rotation wins rather than being undone.
            async with engine.begin() as conn:
                await system_scope(conn)
                res = await conn.execute(
                    text(
                        "UPDATE tenant_keys SET kek_id = :k, wrapped = :w, rotated_at = now() "
                        "WHERE tenant_id = :t AND kek_id = :old AND wrapped = :ow"
                    ),
                    {"k": kid, "w": wrapped, "t": r.tenant_id, "old": r.kek_id, "ow": r.wrapped},
                )
                done += res.rowcount
        return done


def keys_of(conn: AsyncConnection | AsyncEngine) -> TenantKeys:
    if isinstance(conn, AsyncConnection):
        sync = conn.sync_connection
        options = {} if sync is None else sync.get_execution_options()
    else:
        options = conn.get_execution_options()
    keys: Any = options.get(OPTION)
    if not isinstance(keys, TenantKeys):
        raise RuntimeError("this engine was made without data keys (make_engine(..., keys=))")
    return keys
