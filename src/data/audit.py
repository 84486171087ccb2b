"""`c360 audit verify`: walk each tenant's hash chain of lifecycle history (migration 0003).

One set-based pass per tenant: every row's digest is recomputed from its stored predecessor
hash, every row must link to the row before it, positions must run 1..N without a gap, and
the tenant's recorded head must be the last row. The first row failing any of these is named.

Changes are linked after commit by the sealer (migrations 0011, 0017): a change still queued
for its seal is not walked but counted, and one committed more than `STALE_SECONDS` ago
fails the check, so a stalled sealer never passes for an intact chain.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from .chain import STALE_SECONDS
from .scope import system_scope

_TENANTS = text(
    "SELECT tenant_id FROM history_heads WHERE CAST(:t AS text) IS NULL OR tenant_id = :t "
    "UNION SELECT DISTINCT tenant_id FROM lifecycle_history "
    "WHERE CAST(:t AS text) IS NULL OR tenant_id = :t "
    "UNION SELECT DISTINCT tenant_id FROM history_unsealed "
    "WHERE CAST(:t AS text) IS NULL OR tenant_id = :t ORDER BY 1"
)

_WALK = text(
    """
SELECT id, chain_pos, prev_id, ok_hash, ok_link, ok_pos, total FROM (
  SELECT h.id, h.chain_pos, lag(h.id) OVER w AS prev_id,
         h.row_hash = c360_history_digest(h.prev_hash, h) AS ok_hash,
         h.prev_hash = COALESCE(lag(h.row_hash) OVER w, decode(repeat('00', 32), 'hex'))
           AS ok_link,
         h.chain_pos = row_number() OVER w AS ok_pos,
         count(*) OVER () AS total
  FROM lifecycle_history h WHERE h.tenant_id = :t AND h.chain_pos IS NOT NULL
  WINDOW w AS (ORDER BY h.chain_pos)
) x
ORDER BY (ok_hash AND ok_link AND ok_pos), chain_pos
LIMIT 1
"""
)

_HEAD = text(
    "SELECT hh.position, hh.head, l.chain_pos, l.row_hash, l.id FROM history_heads hh "
    "FULL JOIN (SELECT chain_pos, row_hash, id, tenant_id FROM lifecycle_history "
    "WHERE tenant_id = :t AND chain_pos IS NOT NULL ORDER BY chain_pos DESC LIMIT 1) l "
    "ON l.tenant_id = hh.tenant_id "
    "WHERE hh.tenant_id = :t OR l.tenant_id = :t"
)


# Queued changes (migration 0017), and rows inserted unlinked that their commit has not
# linked yet (only inside the transaction that inserted them, or after tampering).
_UNSEALED = text(
    "SELECT count(*) AS n, "
    "COALESCE(extract(epoch FROM now() - min(changed_at)), 0) AS oldest_s, "
    "(array_agg(id ORDER BY seq))[1] AS first_id FROM ("
    "SELECT history_id AS id, changed_at, seq FROM history_unsealed "
    "WHERE tenant_id = :t AND customer_id IS NOT NULL "
    "UNION ALL SELECT id, changed_at, seq FROM lifecycle_history "
    "WHERE tenant_id = :t AND chain_pos IS NULL) u"
)


@dataclass(frozen=True)
class Broken:
    tenant_id: str
    row_id: uuid.UUID | None
    position: int | None
    why: str
    tampered: bool = True  # else: rows not sealed in time (no evidence of tampering)


@dataclass(frozen=True)
class Verdict:
    rows: int
    broken: list[Broken]
    unsealed: int = 0  # committed, awaiting their seal; not walked yet


async def verify(
    engine: AsyncEngine, tenant_id: str | None = None, *, stale_seconds: float = STALE_SECONDS
) -> Verdict:
    rows = unsealed = 0
    broken: list[Broken] = []
    async with engine.connect() as conn:
        await system_scope(conn)  # one tenant or all: read as the auditor, across tenants
        tenants = [r.tenant_id for r in await conn.execute(_TENANTS, {"t": tenant_id})]
        for t in tenants:
            waiting = (await conn.execute(_UNSEALED, {"t": t})).one()
            unsealed += int(waiting.n)
            if waiting.n and float(waiting.oldest_s) > stale_seconds:
                why = (
                    f"{waiting.n} rows not sealed, the oldest committed "
                    f"{float(waiting.oldest_s):.0f} s ago: no sealer is running"
                )
                broken.append(Broken(t, waiting.first_id, None, why, tampered=False))
            first = (await conn.execute(_WALK, {"t": t})).first()
            if first is not None:
                rows += int(first.total)
                row_id, pos = first.id, int(first.chain_pos)
                if not first.ok_hash:
                    why = "its contents do not match its hash (altered)"
                elif not first.ok_pos:
                    why = "the chain has a gap before it (a row was removed)"
                elif not first.ok_link:
                    # The row before is consistent with its own hash, yet this one does not
                    # link to it: that row was altered and its hash recomputed.
                    row_id, pos = first.prev_id, pos - 1
                    why = "altered, its hash recomputed: the next row still links to the original"
                else:
                    why = ""
                if why:
                    broken.append(Broken(t, row_id, pos, why))
                    continue
            head = (await conn.execute(_HEAD, {"t": t})).first()
            if first is None and (head is None or head.position is None):
                continue  # nothing sealed yet
            if head is None or head.position is None:
                broken.append(Broken(t, None, None, "the tenant's chain head is missing"))
            elif head.chain_pos is None or (head.position, bytes(head.head)) != (
                head.chain_pos,
                bytes(head.row_hash),
            ):
                last = None if head.chain_pos is None else int(head.chain_pos)
                if last == head.position:
                    why = "altered, its hash recomputed: it is not the recorded chain head"
                else:
                    why = (
                        f"the chain ends at position {last} but its head says "
                        f"{head.position} (rows were removed from the end)"
                    )
                broken.append(Broken(t, head.id, last, why))
    return Verdict(rows, broken, unsealed)
