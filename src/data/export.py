"""Data subject access (GDPR articles 15 and 20): everything the service holds about one
customer, in one versioned shape, and the record that it was handed out.

The shape (docs/EXPORT.md) is the same for the CLI's JSON and the GraphQL answer: camelCase
keys, times in ISO 8601 UTC. Email and phone are opened with the tenant's data key; an
erased customer's export says so and carries no profile at all.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from .chain import ALL_HISTORY
from .cloudevents import iso
from .keys import keys_of
from .scope import tenant_scope

FORMAT = "c360.customer-export"
VERSION = 1
CHANNELS = ("graphql", "cli")

_CUSTOMER = text(
    "SELECT id, name, email, phone, company_name, tier, tags, assigned_to, created_at, "
    "updated_at, deleted_at, erased_at, stage, stage_entered_at, lifecycle_updated_at, "
    "lifecycle_updated_by, reason_code, source, version "
    "FROM customers WHERE tenant_id = :t AND id = :id"
)
_HISTORY = text(
    "SELECT h.id, h.version, h.from_stage, h.to_stage, h.changed_at, h.changed_by, "  # noqa: S608
    "h.reason_code, h.source, h.config_version, c.event_source, c.event_id, c.event_type "
    f"FROM {ALL_HISTORY} h LEFT JOIN history_causes c "
    "ON c.tenant_id = h.tenant_id AND c.history_id = h.id "
    "WHERE h.tenant_id = :t AND h.customer_id = :id ORDER BY h.version"
)
_METRICS = text(
    "SELECT open_support_issues, closed_support_issues, last_support_issue_closed_at, "
    "contract_renewal_count, last_contract_renewed_at FROM customer_metrics "
    "WHERE tenant_id = :t AND customer_id = :id"
)
_ISSUES = text(
    "SELECT issue_id, priority, opened_at, closed_at FROM support_issues "
    "WHERE tenant_id = :t AND customer_id = :id ORDER BY issue_id"
)
_RENEWALS = text(
    "SELECT contract_id, renewed_at FROM contract_renewals "
    "WHERE tenant_id = :t AND customer_id = :id ORDER BY renewed_at, contract_id"
)
_RECORD = text(
    "INSERT INTO data_exports (tenant_id, id, customer_id, exported_by, exported_at, channel, "
    "customer_erased) VALUES (:t, :id, :c, :by, :at, :channel, :erased)"
)
_LIST = text(
    "SELECT id, customer_id, exported_by, exported_at, channel, customer_erased "
    "FROM data_exports WHERE tenant_id = :t AND (CAST(:c AS uuid) IS NULL OR customer_id = :c) "
    "ORDER BY exported_at DESC, id DESC LIMIT :n"
)


@dataclass(frozen=True, slots=True)
class ExportRecord:
    """That an export happened: who, when, which customer, through what."""

    id: uuid.UUID
    customer_id: uuid.UUID
    exported_by: str
    exported_at: datetime
    channel: str
    customer_erased: bool


@dataclass(frozen=True, slots=True)
class CustomerExport:
    """One customer's data as the export hands it out (`document()` is its JSON)."""

    record: ExportRecord
    tenant_id: str
    erased_at: datetime | None
    profile: dict[str, Any] | None
    lifecycle: dict[str, Any]
    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    support_issues: list[dict[str, Any]]
    contract_renewals: list[dict[str, Any]]

    @property
    def erased(self) -> bool:
        return self.erased_at is not None

    def document(self) -> dict[str, Any]:
        """The documented JSON shape (docs/EXPORT.md), times as ISO 8601 text."""
        r = self.record
        doc: dict[str, Any] = _jsonable(
            {
                "format": FORMAT,
                "version": VERSION,
                "exportId": r.id,
                "exportedAt": r.exported_at,
                "exportedBy": r.exported_by,
                "tenantId": self.tenant_id,
                "customerId": r.customer_id,
                "erased": self.erased,
                "erasedAt": self.erased_at,
                "profile": self.profile,
                "lifecycle": self.lifecycle,
                "history": self.history,
                "metrics": self.metrics,
                "supportIssues": self.support_issues,
                "contractRenewals": self.contract_renewals,
            }
        )
        return doc


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


async def export_customer(
    conn: AsyncConnection,
    tenant_id: str,
    customer_id: uuid.UUID,
    actor: str,
    channel: str,
    now: datetime,
) -> CustomerExport | None:
    """Read everything held about the customer and record the export, in the caller's
    transaction; None (nothing recorded) when the tenant has no such customer."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown export channel {channel!r}")
    await tenant_scope(conn, tenant_id)
    p = {"t": tenant_id, "id": customer_id}
    c = (await conn.execute(_CUSTOMER, p)).first()
    if c is None:
        return None
    erased = c.erased_at is not None
    profile = None
    if not erased:
        cipher = await keys_of(conn).for_read(conn, tenant_id)

        def opened(column: str) -> str | None:
            token = getattr(c, column)
            return None if cipher is None else cipher.open(token, customer_id, column)

        profile = {
            "name": c.name,
            "email": opened("email"),
            "phone": opened("phone"),
            "companyName": c.company_name,
            "tier": c.tier,
            "tags": list(c.tags or []),
            "assignedTo": c.assigned_to,
            "createdAt": c.created_at,
            "updatedAt": c.updated_at,
            "deletedAt": c.deleted_at,
        }
    lifecycle = {
        "stage": c.stage,
        "enteredAt": c.stage_entered_at,
        "updatedAt": c.lifecycle_updated_at,
        "updatedBy": c.lifecycle_updated_by,
        "reasonCode": c.reason_code,
        "source": c.source,
        "version": c.version,
    }
    history = [
        {
            "id": h.id,
            "version": h.version,
            "fromStage": h.from_stage,
            "toStage": h.to_stage,
            "changedAt": h.changed_at,
            "changedBy": h.changed_by,
            "reasonCode": h.reason_code,
            "source": h.source,
            "configVersion": h.config_version,
            "causedBy": None
            if h.event_id is None
            else {"source": h.event_source, "id": h.event_id, "type": h.event_type},
        }
        for h in await conn.execute(_HISTORY, p)
    ]
    m = (await conn.execute(_METRICS, p)).first()
    metrics = {
        "openSupportIssues": m.open_support_issues if m else 0,
        "closedSupportIssues": m.closed_support_issues if m else 0,
        "lastSupportIssueClosedAt": m.last_support_issue_closed_at if m else None,
        "contractRenewalCount": m.contract_renewal_count if m else 0,
        "lastContractRenewedAt": m.last_contract_renewed_at if m else None,
    }
    issues = [
        {
            "issueId": i.issue_id,
            "priority": i.priority,
            "openedAt": i.opened_at,
            "closedAt": i.closed_at,
        }
        for i in await conn.execute(_ISSUES, p)
    ]
    renewals = [
        {"contractId": r.contract_id, "renewedAt": r.renewed_at}
        for r in await conn.execute(_RENEWALS, p)
    ]
    record = ExportRecord(uuid.uuid4(), customer_id, actor, now, channel, erased)
    await conn.execute(
        _RECORD,
        {
            "t": tenant_id,
            "id": record.id,
            "c": customer_id,
            "by": actor,
            "at": now,
            "channel": channel,
            "erased": erased,
        },
    )
    return CustomerExport(
        record, tenant_id, c.erased_at, profile, lifecycle, history, metrics, issues, renewals
    )


async def list_exports(
    conn: AsyncConnection, tenant_id: str, customer_id: uuid.UUID | None, limit: int
) -> list[ExportRecord]:
    """The tenant's export records, newest first (one customer's, when given)."""
    await tenant_scope(conn, tenant_id)
    rows = await conn.execute(_LIST, {"t": tenant_id, "c": customer_id, "n": limit})
    return [ExportRecord(*r) for r in rows]
