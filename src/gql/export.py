"""Data subject access (GDPR articles 15 and 20): a customer's export and the export log.

The export is a mutation, not a query: every export is recorded, and a query must be safe
to run twice (the compiled path's verify mode and HTTP GET both would). Its answer carries
the same content as `c360 export` writes (docs/EXPORT.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import strawberry
from strawberry.types import Info

from customer360.data.export import FORMAT, CustomerExport, ExportRecord
from customer360.lifecycle import Code, Source

from .context import Context
from .errors import ApiError, bad_input
from .permissions import IsTenantAdmin
from .types import CustomerTier, TransitionSource, parse_id

MAX_EXPORT_RECORDS = 200


@strawberry.type
class ExportedProfile:
    name: str
    email: str | None
    phone: str | None
    company_name: str | None
    tier: CustomerTier | None
    tags: list[str]
    assigned_to: str | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None


@strawberry.type
class ExportedLifecycle:
    stage: str
    entered_at: datetime
    updated_at: datetime
    updated_by: str
    reason_code: str | None
    source: TransitionSource  # type: ignore[valid-type]
    version: int


@strawberry.type(description="A consumed CloudEvent, by its source and id.")
class EventReference:
    source: str
    id: str
    type: str


@strawberry.type
class ExportedTransition:
    id: strawberry.ID
    version: int
    from_stage: str | None
    to_stage: str
    changed_at: datetime
    changed_by: str
    reason_code: str | None
    source: TransitionSource  # type: ignore[valid-type]
    config_version: int
    caused_by: EventReference | None = strawberry.field(
        description="The consumed event that made this change; null when none did (a user's "
        "change, or one recorded before events were kept)."
    )


@strawberry.type
class ExportedMetrics:
    open_support_issues: int
    closed_support_issues: int
    last_support_issue_closed_at: datetime | None
    contract_renewal_count: int
    last_contract_renewed_at: datetime | None


@strawberry.type
class ExportedSupportIssue:
    issue_id: str
    priority: str | None
    opened_at: datetime | None
    closed_at: datetime | None


@strawberry.type
class ExportedContractRenewal:
    contract_id: str
    renewed_at: datetime


@strawberry.type(description="That a customer's data was exported: who, when, through what.")
class DataExportRecord:
    id: strawberry.ID
    customer_id: strawberry.ID
    exported_by: str
    exported_at: datetime
    channel: str = strawberry.field(description="graphql or cli.")
    customer_erased: bool

    @classmethod
    def of(cls, r: ExportRecord) -> DataExportRecord:
        return cls(
            id=strawberry.ID(str(r.id)),
            customer_id=strawberry.ID(str(r.customer_id)),
            exported_by=r.exported_by,
            exported_at=r.exported_at,
            channel=r.channel,
            customer_erased=r.customer_erased,
        )


@strawberry.type(
    description="Everything the service holds about one customer (GDPR articles 15 and 20), "
    "in the shape `c360 export` writes as JSON (docs/EXPORT.md)."
)
class CustomerDataExport:
    format: str
    version: int = strawberry.field(description="Of the export's shape; 1.")
    export_id: strawberry.ID
    exported_at: datetime
    exported_by: str
    tenant_id: str
    customer_id: strawberry.ID
    erased: bool
    erased_at: datetime | None
    profile: ExportedProfile | None = strawberry.field(
        description="Null once the customer is erased: an erased customer's export holds no "
        "personal data."
    )
    lifecycle: ExportedLifecycle
    history: list[ExportedTransition] = strawberry.field(description="Oldest first.")
    metrics: ExportedMetrics
    support_issues: list[ExportedSupportIssue]
    contract_renewals: list[ExportedContractRenewal]

    @classmethod
    def of(cls, e: CustomerExport) -> CustomerDataExport:
        p, lc = e.profile, e.lifecycle
        return cls(
            format=FORMAT,
            version=1,
            export_id=strawberry.ID(str(e.record.id)),
            exported_at=e.record.exported_at,
            exported_by=e.record.exported_by,
            tenant_id=e.tenant_id,
            customer_id=strawberry.ID(str(e.record.customer_id)),
            erased=e.erased,
            erased_at=e.erased_at,
            profile=None if p is None else _profile(p),
            lifecycle=ExportedLifecycle(
                stage=lc["stage"],
                entered_at=lc["enteredAt"],
                updated_at=lc["updatedAt"],
                updated_by=lc["updatedBy"],
                reason_code=lc["reasonCode"],
                source=Source(lc["source"]),
                version=lc["version"],
            ),
            history=[_transition(h) for h in e.history],
            metrics=ExportedMetrics(
                open_support_issues=e.metrics["openSupportIssues"],
                closed_support_issues=e.metrics["closedSupportIssues"],
                last_support_issue_closed_at=e.metrics["lastSupportIssueClosedAt"],
                contract_renewal_count=e.metrics["contractRenewalCount"],
                last_contract_renewed_at=e.metrics["lastContractRenewedAt"],
            ),
            support_issues=[
                ExportedSupportIssue(
                    issue_id=i["issueId"],
                    priority=i["priority"],
                    opened_at=i["openedAt"],
                    closed_at=i["closedAt"],
                )
                for i in e.support_issues
            ],
            contract_renewals=[
                ExportedContractRenewal(contract_id=r["contractId"], renewed_at=r["renewedAt"])
                for r in e.contract_renewals
            ],
        )


def _profile(p: dict[str, Any]) -> ExportedProfile:
    return ExportedProfile(
        name=p["name"],
        email=p["email"],
        phone=p["phone"],
        company_name=p["companyName"],
        tier=CustomerTier(p["tier"]) if p["tier"] else None,
        tags=p["tags"],
        assigned_to=p["assignedTo"],
        created_at=p["createdAt"],
        updated_at=p["updatedAt"],
        deleted_at=p["deletedAt"],
    )


def _transition(h: dict[str, Any]) -> ExportedTransition:
    cause = h["causedBy"]
    return ExportedTransition(
        id=strawberry.ID(str(h["id"])),
        version=h["version"],
        from_stage=h["fromStage"],
        to_stage=h["toStage"],
        changed_at=h["changedAt"],
        changed_by=h["changedBy"],
        reason_code=h["reasonCode"],
        source=Source(h["source"]),
        config_version=h["configVersion"],
        caused_by=None if cause is None else EventReference(**cause),
    )


@strawberry.type
class ExportQuery:
    @strawberry.field(
        permission_classes=[IsTenantAdmin],
        description="Needs TENANT_ADMIN (or SUPER_ADMIN). The tenant's data exports, newest "
        "first; one customer's when `customerId` is given.",
    )
    async def customer_data_exports(
        self,
        info: Info[Context, None],
        customer_id: strawberry.ID | None = None,
        first: int | None = 50,
    ) -> list[DataExportRecord]:
        ctx = info.context
        limit = 50 if first is None else first
        if not 0 < limit <= MAX_EXPORT_RECORDS:
            raise bad_input(f"first must be between 1 and {MAX_EXPORT_RECORDS}")
        cid = None if customer_id is None else parse_id(customer_id)
        records = await ctx.usecases.data_exports(ctx.tenant_id, cid, limit)
        return [DataExportRecord.of(r) for r in records]


@strawberry.type
class ExportMutation:
    @strawberry.mutation(
        permission_classes=[IsTenantAdmin],
        description="Needs TENANT_ADMIN (or SUPER_ADMIN). Everything held about one customer of "
        "the tenant, email and phone opened; the export is recorded (customerDataExports). "
        "NOT_FOUND when the tenant has no such customer.",
    )
    async def export_customer_data(
        self, info: Info[Context, None], customer_id: strawberry.ID
    ) -> CustomerDataExport:
        ctx = info.context
        cid = parse_id(customer_id)
        found = await ctx.usecases.export_customer(
            ctx.tenant_id, cid, ctx.principal.subject, "graphql"
        )
        if found is None:
            raise ApiError(Code.NOT_FOUND, "No such customer")
        return CustomerDataExport.of(found)
