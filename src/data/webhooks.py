"""Webhook endpoints and deliveries (migration 0010).

Endpoints are written by a tenant's admins in their unit of work; deliveries are made from
the outbox by the relay's webhook sink (`FAN_OUT`) and worked by one delivery worker across
all processes (events/webhooks.py), both in the system scope. A delivery is the head of its
(endpoint, customer) queue until it is delivered or has failed for good: later ones for the
same customer at the same endpoint wait behind it, other customers and endpoints do not.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from .cloudevents import AUDIT_TOPIC
from .keys import keys_of
from .scope import tenant_scope

SECRET_COLUMN = "webhook_secret"  # noqa: S105 (a column label, not a secret)
EVENT_TYPES = (AUDIT_TOPIC,)
STATUSES = ("pending", "delivered", "failed")
# After a rotation, deliveries are signed with the previous secret too for this long.
ROTATION_OVERLAP = timedelta(hours=24)

_ENDPOINT_COLUMNS = (
    "id, url, description, event_types, stages, active, created_at, created_by, updated_at, "
    "consecutive_failures, failing_since, disabled_at, disabled_reason, previous_secret_until"
)
_DELIVERY_COLUMNS = (
    "id, endpoint_id, event_id, event_type, customer_id, status, attempts, next_attempt_at, "
    "last_attempt_at, last_status_code, last_error, created_at, delivered_at"
)


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: uuid.UUID
    url: str
    description: str | None
    event_types: list[str]
    stages: list[str]
    active: bool
    created_at: datetime
    created_by: str
    updated_at: datetime
    consecutive_failures: int
    failing_since: datetime | None
    disabled_at: datetime | None
    disabled_reason: str | None
    previous_secret_until: datetime | None


@dataclass(frozen=True, slots=True)
class Delivery:
    id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: str
    event_type: str
    customer_id: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


def _endpoint(row: Any) -> Endpoint:
    return Endpoint(*row)


async def create_endpoint(
    conn: AsyncConnection,
    tenant_id: str,
    actor: str,
    fields: dict[str, Any],
    secret: str,
    now: datetime,
) -> Endpoint:
    """`fields`: url, and any of description, event_types, stages (empty: all), active."""
    await tenant_scope(conn, tenant_id)
    eid = uuid.uuid4()
    cipher = await keys_of(conn).for_write(conn, tenant_id)
    row = (
        await conn.execute(
            text(
                "INSERT INTO webhook_endpoints (tenant_id, id, url, description, event_types, "  # noqa: S608 (column lists are module constants)
                "stages, active, secret, created_at, created_by, updated_at) VALUES (:t, :id, "
                ":url, :description, :event_types, :stages, :active, :secret, :now, :by, :now) "
                f"RETURNING {_ENDPOINT_COLUMNS}"
            ),
            {
                "description": None,
                "event_types": [],
                "stages": [],
                "active": True,
                **fields,
                "t": tenant_id,
                "id": eid,
                "secret": cipher.seal(secret, eid, SECRET_COLUMN),
                "now": now,
                "by": actor,
            },
        )
    ).one()
    return _endpoint(row)


async def update_endpoint(
    conn: AsyncConnection,
    tenant_id: str,
    endpoint_id: uuid.UUID,
    fields: dict[str, Any],
    now: datetime,
) -> Endpoint | None:
    """Change the given fields; `active: true` also re-enables an endpoint that was disabled
    for its failures (its run of failures forgotten)."""
    await tenant_scope(conn, tenant_id)
    allowed = ("url", "description", "event_types", "stages", "active")
    sets = [f"{f} = :{f}" for f in allowed if f in fields]
    if fields.get("active") is True:
        sets += [
            "disabled_at = NULL",
            "disabled_reason = NULL",
            "consecutive_failures = 0",
            "failing_since = NULL",
        ]
    sets.append("updated_at = :now")
    row = (
        await conn.execute(
            # Column names come from the fixed tuple above, never from input.
            text(
                f"UPDATE webhook_endpoints SET {', '.join(sets)} "  # noqa: S608
                f"WHERE tenant_id = :t AND id = :id RETURNING {_ENDPOINT_COLUMNS}"
            ),
            {
                **{f: fields[f] for f in allowed if f in fields},
                "t": tenant_id,
                "id": endpoint_id,
                "now": now,
            },
        )
    ).first()
    return None if row is None else _endpoint(row)


async def rotate_secret(
    conn: AsyncConnection, tenant_id: str, endpoint_id: uuid.UUID, secret: str, now: datetime
) -> Endpoint | None:
    """The new secret signs from now on; the previous one also signs for ROTATION_OVERLAP."""
    await tenant_scope(conn, tenant_id)
    cipher = await keys_of(conn).for_write(conn, tenant_id)
    row = (
        await conn.execute(
            text(
                "UPDATE webhook_endpoints SET previous_secret = secret, secret = :secret, "  # noqa: S608 (column lists are module constants)
                "previous_secret_until = :until, updated_at = :now "
                f"WHERE tenant_id = :t AND id = :id RETURNING {_ENDPOINT_COLUMNS}"
            ),
            {
                "t": tenant_id,
                "id": endpoint_id,
                "secret": cipher.seal(secret, endpoint_id, SECRET_COLUMN),
                "until": now + ROTATION_OVERLAP,
                "now": now,
            },
        )
    ).first()
    return None if row is None else _endpoint(row)


async def delete_endpoint(conn: AsyncConnection, tenant_id: str, endpoint_id: uuid.UUID) -> bool:
    await tenant_scope(conn, tenant_id)
    p = {"t": tenant_id, "id": endpoint_id}
    await conn.execute(
        text("DELETE FROM webhook_deliveries WHERE tenant_id = :t AND endpoint_id = :id"), p
    )
    gone = await conn.execute(
        text("DELETE FROM webhook_endpoints WHERE tenant_id = :t AND id = :id RETURNING 1"), p
    )
    return gone.first() is not None


async def list_endpoints(
    conn: AsyncConnection, tenant_id: str, endpoint_id: uuid.UUID | None = None
) -> list[Endpoint]:
    await tenant_scope(conn, tenant_id)
    rows = await conn.execute(
        text(
            f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE tenant_id = :t "  # noqa: S608
            "AND (CAST(:id AS uuid) IS NULL OR id = :id) ORDER BY created_at, id"
        ),
        {"t": tenant_id, "id": endpoint_id},
    )
    return [_endpoint(r) for r in rows]


async def list_deliveries(
    conn: AsyncConnection,
    tenant_id: str,
    endpoint_id: uuid.UUID,
    status: str | None,
    limit: int,
) -> list[Delivery]:
    """One endpoint's delivery log, newest event first."""
    await tenant_scope(conn, tenant_id)
    rows = await conn.execute(
        text(
            f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries "  # noqa: S608
            "WHERE tenant_id = :t AND endpoint_id = :e "
            "AND (CAST(:s AS text) IS NULL OR status = :s) "
            "ORDER BY outbox_id DESC, id LIMIT :n"
        ),
        {"t": tenant_id, "e": endpoint_id, "s": status, "n": limit},
    )
    return [Delivery(*r) for r in rows]


async def replay_delivery(
    conn: AsyncConnection, tenant_id: str, delivery_id: uuid.UUID, now: datetime
) -> Delivery | None:
    """Send one delivery again, whatever its status: pending from now, its attempts counted
    afresh (same webhook-id, so the receiver can tell it is the same message)."""
    await tenant_scope(conn, tenant_id)
    row = (
        await conn.execute(
            text(
                "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, "  # noqa: S608 (column lists are module constants)
                "next_attempt_at = :now, delivered_at = NULL "
                f"WHERE tenant_id = :t AND id = :id RETURNING {_DELIVERY_COLUMNS}"
            ),
            {"t": tenant_id, "id": delivery_id, "now": now},
        )
    ).first()
    return None if row is None else Delivery(*row)


# --- the relay's sink and the worker, in the system scope ------------------------------------

# The webhook sink's mark of a relay drain ($1: the drained outbox rows' ids): one delivery
# per matching endpoint and audit event, and the rows marked fanned out, in one statement on
# the relay's own connection (system scope). Endpoints see the events written after they
# were registered. Idempotent: a re-drained row makes no second delivery. Most audit events
# never reach it: their seal fans them out (migration 0014, where the rule lives).
FAN_OUT_AND_MARK = "SELECT c360_fan_out($1::bigint[], true)"

_DUE = text(
    """
WITH heads AS (
  SELECT DISTINCT ON (endpoint_id, customer_id) tenant_id, id, endpoint_id, next_attempt_at
  FROM webhook_deliveries WHERE status = 'pending'
  ORDER BY endpoint_id, customer_id, outbox_id
)
SELECT d.tenant_id, d.id, d.endpoint_id, d.event_id, d.payload, d.attempts, e.url, e.secret,
       CASE WHEN e.previous_secret_until > now() THEN e.previous_secret END AS previous_secret
FROM heads h
JOIN webhook_deliveries d ON d.tenant_id = h.tenant_id AND d.id = h.id
JOIN webhook_endpoints e ON e.tenant_id = h.tenant_id AND e.id = h.endpoint_id
WHERE e.active AND h.next_attempt_at <= now()
ORDER BY h.next_attempt_at LIMIT :n
"""
)


@dataclass(frozen=True, slots=True)
class Due:
    tenant_id: str
    id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: str
    payload: dict[str, Any]
    attempts: int
    url: str
    secrets: list[str]  # opened; the newest first


async def due(conn: AsyncConnection, limit: int) -> list[Due]:
    """Deliveries to attempt now: the head of each (endpoint, customer) queue, if due."""
    out = []
    keys = keys_of(conn)
    for r in await conn.execute(_DUE, {"n": limit}):
        cipher = await keys.for_read(conn, r.tenant_id)
        opened = [
            None if cipher is None else cipher.open(token, r.endpoint_id, SECRET_COLUMN)
            for token in (r.secret, r.previous_secret)
            if token is not None
        ]
        out.append(
            Due(
                r.tenant_id,
                r.id,
                r.endpoint_id,
                r.event_id,
                r.payload,
                r.attempts,
                r.url,
                [s for s in opened if s is not None],
            )
        )
    return out


_DELIVERED = text(
    "UPDATE webhook_deliveries SET status = 'delivered', attempts = attempts + 1, "
    "last_attempt_at = now(), delivered_at = now(), last_status_code = :code, last_error = NULL "
    "WHERE tenant_id = :t AND id = :id"
)
_ENDPOINT_OK = text(
    "UPDATE webhook_endpoints SET consecutive_failures = 0, failing_since = NULL "
    "WHERE tenant_id = :t AND id = :e AND consecutive_failures > 0"
)
_FAILED = text(
    "UPDATE webhook_deliveries SET attempts = attempts + 1, last_attempt_at = now(), "
    "last_status_code = :code, last_error = :error, "
    "status = CASE WHEN CAST(:retry AS double precision) IS NULL THEN 'failed' ELSE status END, "
    "next_attempt_at = CASE WHEN CAST(:retry AS double precision) IS NULL THEN next_attempt_at "
    "ELSE now() + make_interval(secs => CAST(:retry AS double precision)) END "
    "WHERE tenant_id = :t AND id = :id"
)
# A long run of failures (so many in a row, for so long) disables the endpoint until an admin
# enables it again; its pending deliveries wait, none are made meanwhile.
_ENDPOINT_FAILED = text(
    """
UPDATE webhook_endpoints e SET
  consecutive_failures = e.consecutive_failures + 1,
  failing_since = COALESCE(e.failing_since, now()),
  active = e.active AND NOT x.disable,
  disabled_at = CASE WHEN x.disable AND e.active THEN now() ELSE e.disabled_at END,
  disabled_reason = CASE WHEN x.disable AND e.active THEN :reason ELSE e.disabled_reason END
FROM (
  SELECT e2.consecutive_failures + 1 >= :n
         AND now() - COALESCE(e2.failing_since, now()) >= make_interval(secs => :secs) AS disable
  FROM webhook_endpoints e2 WHERE e2.tenant_id = :t AND e2.id = :e
) x
WHERE e.tenant_id = :t AND e.id = :e
"""
)


async def delivered(conn: AsyncConnection, d: Due, code: int) -> None:
    await conn.execute(_DELIVERED, {"t": d.tenant_id, "id": d.id, "code": code})
    await conn.execute(_ENDPOINT_OK, {"t": d.tenant_id, "e": d.endpoint_id})


async def failed(
    conn: AsyncConnection,
    d: Due,
    code: int | None,
    error: str,
    retry_in: float | None,
    disable_after: tuple[int, float],
) -> None:
    """`retry_in`: seconds until the next attempt; None when the schedule is spent."""
    await conn.execute(
        _FAILED,
        {"t": d.tenant_id, "id": d.id, "code": code, "error": error[:500], "retry": retry_in},
    )
    n, secs = disable_after
    reason = f"{n} failed deliveries in a row; last: {error[:200]}"
    await conn.execute(
        _ENDPOINT_FAILED,
        {"t": d.tenant_id, "e": d.endpoint_id, "n": n, "secs": secs, "reason": reason},
    )
