"""Customer profiles, metrics and processed-event marks, written inside a unit of work."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from customer360.lifecycle import Transition

from . import outbox
from .keys import keys_of

# Module constants only, no input: a string-built statement is safe here.
_CACHE_SQL = f"{outbox.INSERT} VALUES (:t, '{outbox.CACHE_TOPIC}', :k, '{{}}') RETURNING id"
_CACHE_ROW = text(f"WITH i AS ({_CACHE_SQL}) SELECT id, {outbox.WAKE} AS woken FROM i")  # noqa: S608
PROFILE_FIELDS = ("name", "email", "phone", "company_name", "tier", "tags", "assigned_to")
SEALED = ("email", "phone")
# Personal data: once a customer is erased, later profile events cannot bring it back.
PERSONAL = ("name", "email", "phone", "email_bidx")
ERASED_NAME = "[erased]"

_MARK = text(
    "INSERT INTO processed_events (source, event_id, tenant_id, type) "
    "VALUES (:source, :id, :t, :type) ON CONFLICT DO NOTHING RETURNING 1"
)
_EXISTS = text(
    "SELECT 1 FROM customers WHERE tenant_id = :t AND id = :id AND deleted_at IS NULL FOR UPDATE"
)
_INSERT = text(
    """
INSERT INTO customers (tenant_id, id, name, email, phone, email_bidx, company_name, tier,
                       tags, assigned_to, created_at, updated_at, stage, stage_entered_at,
                       lifecycle_updated_at, lifecycle_updated_by, source, version)
VALUES (:t, :id, :name, :email, :phone, :email_bidx, :company_name, :tier, :tags,
        :assigned_to, :at, :at, :stage, :at, :at, :actor, 'SYSTEM', 0)
ON CONFLICT DO NOTHING RETURNING 1
"""
)
_METRICS = text(
    "INSERT INTO customer_metrics (tenant_id, customer_id) VALUES (:t, :id) ON CONFLICT DO NOTHING"
)
_RENEWAL = text(
    """
WITH ins AS (
  INSERT INTO contract_renewals (tenant_id, customer_id, contract_id, renewed_at)
  VALUES (:t, :id, :contract, :at) ON CONFLICT DO NOTHING RETURNING renewed_at
)
UPDATE customer_metrics m SET
  contract_renewal_count = m.contract_renewal_count + (SELECT count(*) FROM ins),
  last_contract_renewed_at = GREATEST(m.last_contract_renewed_at, (SELECT max(renewed_at) FROM ins))
WHERE m.tenant_id = :t AND m.customer_id = :id
"""
)
# Issues are tracked one by one, so a close that arrives before its open still counts right.
_ISSUE_OPENED = text(
    """
INSERT INTO support_issues (tenant_id, customer_id, issue_id, priority, opened_at)
VALUES (:t, :id, :issue, :priority, :at)
ON CONFLICT (tenant_id, customer_id, issue_id) DO UPDATE
  SET opened_at = COALESCE(support_issues.opened_at, EXCLUDED.opened_at),
      priority = COALESCE(EXCLUDED.priority, support_issues.priority)
"""
)
_ISSUE_CLOSED = text(
    """
INSERT INTO support_issues (tenant_id, customer_id, issue_id, closed_at)
VALUES (:t, :id, :issue, :at)
ON CONFLICT (tenant_id, customer_id, issue_id) DO UPDATE
  SET closed_at = GREATEST(support_issues.closed_at, EXCLUDED.closed_at)
"""
)
_ISSUE_COUNTS = text(
    """
UPDATE customer_metrics m SET
  open_support_issues = s.open, closed_support_issues = s.closed,
  last_support_issue_closed_at = s.last_closed
FROM (SELECT count(*) FILTER (WHERE closed_at IS NULL) AS open,
             count(*) FILTER (WHERE closed_at IS NOT NULL) AS closed,
             max(closed_at) AS last_closed
      FROM support_issues WHERE tenant_id = :t AND customer_id = :id) s
WHERE m.tenant_id = :t AND m.customer_id = :id
"""
)
# Metrics carry the event's own time; the customer's updatedAt is when we learnt of it.
_TOUCH = text(
    "UPDATE customers SET updated_at = GREATEST(updated_at, now()) "
    "WHERE tenant_id = :t AND id = :id"
)


class CustomerRepository:
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        # (tenant, customer, outbox row id = the cache generation it leads to)
        self.touched: list[tuple[str, uuid.UUID, int]] = []

    async def _changed(self, tenant_id: str, customer_id: uuid.UUID) -> None:
        """A profile-only change: an outbox row tells every process's cache (no audit event)."""
        row = (await self.conn.execute(_CACHE_ROW, {"t": tenant_id, "k": str(customer_id)})).one()
        self.touched.append((tenant_id, customer_id, int(row.id)))

    async def _sealed(
        self,
        tenant_id: str,
        customer_id: uuid.UUID,
        profile: Mapping[str, Any],
        fields: Sequence[str],
    ) -> dict[str, Any]:
        """Profile columns to write, with email and phone sealed and the email indexed."""
        params = {f: profile.get(f) for f in fields}
        if any(params.get(f) is not None for f in SEALED):
            cipher = await keys_of(self.conn).for_write(self.conn, tenant_id)
            for f in SEALED:
                if f in params:
                    params[f] = cipher.seal(params[f], customer_id, f)
            if "email" in fields:
                params["email_bidx"] = cipher.blind(profile.get("email"))
        elif "email" in fields:
            params["email_bidx"] = None
        return params

    async def mark_processed(self, source: str, event_id: str, tenant_id: str, type_: str) -> bool:
        """False when this (source, id) was processed before: the caller changes nothing."""
        row = await self.conn.execute(
            _MARK, {"source": source, "id": event_id, "t": tenant_id, "type": type_}
        )
        return row.first() is not None

    async def exists(self, tenant_id: str, customer_id: uuid.UUID) -> bool:
        row = await self.conn.execute(_EXISTS, {"t": tenant_id, "id": customer_id})
        return row.first() is not None

    async def insert(self, tenant_id: str, first: Transition, profile: Mapping[str, Any]) -> bool:
        """A new customer row in its first stage, version 0 until `first` is recorded."""
        params = await self._sealed(tenant_id, first.customer_id, profile, PROFILE_FIELDS)
        params["email_bidx"] = params.get("email_bidx")
        params["tags"] = list(profile.get("tags") or [])
        params.update(
            t=tenant_id,
            id=first.customer_id,
            at=first.changed_at,
            stage=first.to_stage,
            actor=first.changed_by,
        )
        row = await self.conn.execute(_INSERT, params)
        if row.first() is None:
            return False
        await self.conn.execute(_METRICS, {"t": tenant_id, "id": first.customer_id})
        return True

    async def update_profile(
        self, tenant_id: str, customer_id: uuid.UUID, changes: Mapping[str, Any], at: datetime
    ) -> None:
        fields = [f for f in PROFILE_FIELDS if f in changes]
        if not fields:
            return
        params = await self._sealed(tenant_id, customer_id, changes, fields)
        sets = ", ".join(
            f"{c} = CASE WHEN erased_at IS NULL THEN :{c} ELSE {c} END"
            if c in PERSONAL
            else f"{c} = :{c}"
            for c in params
        )
        params |= {"t": tenant_id, "id": customer_id, "at": at}
        if "tags" in params:
            params["tags"] = list(params["tags"] or [])
        await self.conn.execute(
            # Column names come from PROFILE_FIELDS only, never from input.
            text(
                f"UPDATE customers SET {sets}, updated_at = GREATEST(updated_at, :at) "  # noqa: S608
                "WHERE tenant_id = :t AND id = :id"
            ),
            params,
        )
        await self._changed(tenant_id, customer_id)

    async def contract_renewed(
        self, tenant_id: str, customer_id: uuid.UUID, contract_id: str, at: datetime
    ) -> None:
        p = {"t": tenant_id, "id": customer_id, "contract": contract_id, "at": at}
        await self.conn.execute(_RENEWAL, p)
        await self.conn.execute(_TOUCH, p)
        await self._changed(tenant_id, customer_id)

    async def issue_opened(
        self,
        tenant_id: str,
        customer_id: uuid.UUID,
        issue_id: str,
        priority: str | None,
        at: datetime,
    ) -> None:
        p = {"t": tenant_id, "id": customer_id, "issue": issue_id, "priority": priority, "at": at}
        await self.conn.execute(_ISSUE_OPENED, p)
        await self.conn.execute(_ISSUE_COUNTS, p)
        await self.conn.execute(_TOUCH, p)
        await self._changed(tenant_id, customer_id)

    async def issue_closed(
        self, tenant_id: str, customer_id: uuid.UUID, issue_id: str, at: datetime
    ) -> None:
        p = {"t": tenant_id, "id": customer_id, "issue": issue_id, "at": at}
        await self.conn.execute(_ISSUE_CLOSED, p)
        await self.conn.execute(_ISSUE_COUNTS, p)
        await self.conn.execute(_TOUCH, p)
        await self._changed(tenant_id, customer_id)
