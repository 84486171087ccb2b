"""GraphQL object types of the customer view."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.types import Info

from customer360.auth.principal import Permission as PermissionValue
from customer360.data.queries import Record
from customer360.lifecycle import Reason, Source, StageConfig, Transition

from .context import Context
from .errors import bad_input
from .pagination import Page, check_first, decode_cursor, encode_cursor, scope_of
from .permissions import CanViewHistory
from .projection import reads

TransitionSource = strawberry.enum(Source, name="TransitionSource")
Permission = strawberry.enum(PermissionValue, name="Permission")


@strawberry.enum
class CustomerTier(Enum):
    FREE = "FREE"
    BASIC = "BASIC"
    PRO = "PRO"
    ENTERPRISE = "ENTERPRISE"


# A row's values as members, by a dict lookup rather than an Enum call (over ten times
# slower, paid for each row of a page); an unknown value still raises as the Enum does.
_TIERS = {t.value: t for t in CustomerTier}
_SOURCES = {s.value: s for s in Source}


@strawberry.type
class PageInfo:
    # The page itself, its cursors made when asked for: most lists are read without them.
    _page: strawberry.Private[Page]

    @strawberry.field
    def has_next_page(self) -> bool:
        return self._page.has_next

    @strawberry.field
    def has_previous_page(self) -> bool:
        return self._page.has_previous

    @strawberry.field
    def start_cursor(self) -> str | None:
        rows = self._page.rows
        return self._page.cursor(rows[0]) if rows else None

    @strawberry.field
    def end_cursor(self) -> str | None:
        rows = self._page.rows
        return self._page.cursor(rows[-1]) if rows else None


@strawberry.type
class LifecycleTransition:
    id: strawberry.ID
    customer_id: strawberry.ID
    from_stage: str | None
    to_stage: str
    changed_at: datetime
    changed_by: str
    reason_code: str | None
    source: TransitionSource  # type: ignore[valid-type]

    @classmethod
    def of(cls, t: Transition | Record) -> LifecycleTransition:
        """The one mapping to the API's shape, from the domain's transition or a history
        row (same attribute names)."""
        return cls(
            id=strawberry.ID(str(t.id)),
            customer_id=strawberry.ID(str(t.customer_id)),
            from_stage=t.from_stage,
            to_stage=t.to_stage,
            changed_at=t.changed_at,
            changed_by=t.changed_by,
            reason_code=t.reason_code,
            source=_SOURCES.get(t.source) or Source(t.source),
        )


@strawberry.type
class LifecycleTransitionEdge:
    cursor: str
    node: LifecycleTransition


@strawberry.type
class LifecycleTransitionConnection:
    edges: list[LifecycleTransitionEdge]
    page_info: PageInfo
    _count: strawberry.Private[Callable[[], Awaitable[int]]]

    @strawberry.field
    async def total_count(self) -> int:
        return await self._count()


@strawberry.type
class LifecycleStatus:
    # The customer's row itself, each field read when asked: a page of fifty builds fifty of
    # these and most documents ask for two or three of their fields.
    _row: strawberry.Private[Record]
    _config: strawberry.Private[Callable[[], Awaitable[StageConfig]]]

    @reads("stage")
    def stage(self) -> str:
        return self._row.stage  # type: ignore[no-any-return]

    @reads("stage_entered_at")
    def entered_at(self) -> datetime:
        return self._row.stage_entered_at  # type: ignore[no-any-return]

    @reads("lifecycle_updated_at")
    def updated_at(self) -> datetime:
        return self._row.lifecycle_updated_at  # type: ignore[no-any-return]

    @reads("lifecycle_updated_by")
    def updated_by(self) -> str:
        return self._row.lifecycle_updated_by  # type: ignore[no-any-return]

    @reads("reason_code")
    def reason_code(self) -> str | None:
        return self._row.reason_code  # type: ignore[no-any-return]

    @reads("source")
    def source(self) -> TransitionSource:  # type: ignore[valid-type]
        source = self._row.source
        return _SOURCES.get(source) or Source(source)

    @reads("version")
    def version(self) -> int:
        return self._row.version  # type: ignore[no-any-return]

    @reads(
        "id",
        "version",
        description="For client caches (Apollo, urql): the customer, its version and the "
        "version of the stage configuration, so a cached status never outlives a change of "
        "stage or of the rules behind allowedNextStages.",
    )
    async def id(self) -> strawberry.ID:
        config = await self._config()
        return strawberry.ID(f"{self._row.id}:{self._row.version}:{config.version}")

    @reads("stage", description="Stages the tenant's rules allow from here.")
    async def allowed_next_stages(self) -> list[str]:
        return (await self._config()).allowed_next_stages(self._row.stage)


@strawberry.type
class StageDuration:
    stage: str
    entries: int
    first_entered_at: datetime
    last_entered_at: datetime
    last_exited_at: datetime | None
    total_seconds: int


@strawberry.type
class CustomerMetrics:
    open_support_issues: int
    closed_support_issues: int
    last_support_issue_closed_at: datetime | None
    contract_renewal_count: int
    last_contract_renewed_at: datetime | None
    days_in_stage: int


def stage_durations(rows: list[Record], now: datetime) -> list[StageDuration]:
    """Stays per stage from a history oldest-first; the last stay runs until now."""
    acc: dict[str, dict[str, Any]] = {}
    for i, r in enumerate(rows):
        end = rows[i + 1].changed_at if i + 1 < len(rows) else None
        d = acc.setdefault(
            r.to_stage,
            {"entries": 0, "first": r.changed_at, "last": r.changed_at, "exit": None, "secs": 0.0},
        )
        d["entries"] += 1
        d["last"] = r.changed_at
        d["exit"] = end
        d["secs"] += max(0.0, ((end or now) - r.changed_at).total_seconds())
    return [
        StageDuration(
            stage=s,
            entries=d["entries"],
            first_entered_at=d["first"],
            last_entered_at=d["last"],
            last_exited_at=d["exit"],
            total_seconds=int(d["secs"]),
        )
        for s, d in acc.items()
    ]


async def history_page(ctx: Context, cid: uuid.UUID, first: int | None, after: str | None) -> Page:
    limit = check_first(20 if first is None else first)
    scope = scope_of(ctx.tenant_id, "history", str(cid))
    before = None
    if after is not None:
        keys = decode_cursor(after, scope)
        if len(keys) != 1 or not isinstance(keys[0], int) or not 0 < keys[0] < 2**31:
            raise bad_input("Unreadable cursor", Reason.INVALID_CURSOR)
        before = keys[0]
    rows = list(await ctx.reads.history_page(ctx.tenant_id, cid, limit + 1, before))

    async def count() -> int:
        return await ctx.reads.history_count(ctx.tenant_id, cid)

    return Page(
        rows=rows[:limit],
        cursor=lambda r: encode_cursor(scope, [r.version]),
        has_next=len(rows) > limit,
        has_previous=after is not None,
        count=count,
    )


@strawberry.type
class Customer:
    _row: strawberry.Private[Record]

    @reads("id")
    def id(self) -> strawberry.ID:
        return strawberry.ID(str(self._row.id))

    @reads("tenant_id")
    def tenant_id(self) -> str:
        return str(self._row.tenant_id)

    @reads("name")
    def name(self) -> str:
        return str(self._row.name)

    @reads("email", "id")
    def email(self) -> str | None:
        return self._row.email  # type: ignore[no-any-return]

    @reads("phone", "id")
    def phone(self) -> str | None:
        return self._row.phone  # type: ignore[no-any-return]

    @reads("company_name")
    def company_name(self) -> str | None:
        return self._row.company_name  # type: ignore[no-any-return]

    @reads("tier")
    def tier(self) -> CustomerTier | None:
        tier = self._row.tier
        return (_TIERS.get(tier) or CustomerTier(tier)) if tier else None

    @reads("tags")
    def tags(self) -> list[str]:
        return list(self._row.tags or [])

    @reads("assigned_to")
    def assigned_to(self) -> str | None:
        return self._row.assigned_to  # type: ignore[no-any-return]

    @reads("created_at")
    def created_at(self) -> datetime:
        return self._row.created_at  # type: ignore[no-any-return]

    @reads("updated_at")
    def updated_at(self) -> datetime:
        return self._row.updated_at  # type: ignore[no-any-return]

    @reads(same_row=True)
    def lifecycle(self, info: Info[Context, None]) -> LifecycleStatus:
        return LifecycleStatus(_row=self._row, _config=info.context.stage_config)

    @reads(
        "id",
        permission_classes=[CanViewHistory],
        description="Time spent in each stage this customer has ever been in. Needs VIEW_HISTORY.",
    )
    async def stage_durations(self, info: Info[Context, None]) -> list[StageDuration]:
        rows = await info.context.loaders.history.load(self._row.id)
        return stage_durations(rows, info.context.now())

    @reads(
        "id",
        permission_classes=[CanViewHistory],
        description="The stage the customer was in at that instant; null before it existed. "
        "Needs VIEW_HISTORY.",
    )
    async def stage_at(self, info: Info[Context, None], as_of: datetime) -> str | None:
        if as_of.tzinfo is None:
            as_of = as_of.replace(tzinfo=UTC)
        return await info.context.reads.stage_at(info.context.tenant_id, self._row.id, as_of)

    @reads(
        "id", permission_classes=[CanViewHistory], description="Newest first. Needs VIEW_HISTORY."
    )
    async def lifecycle_history(
        self, info: Info[Context, None], first: int | None = 20, after: str | None = None
    ) -> LifecycleTransitionConnection:
        page = await history_page(info.context, self._row.id, first, after)
        edges = [
            LifecycleTransitionEdge(cursor=page.cursor(r), node=LifecycleTransition.of(r))
            for r in page.rows
        ]
        return LifecycleTransitionConnection(
            edges=edges,
            page_info=PageInfo(_page=page),
            _count=page.count,
        )

    @reads("id", "stage_entered_at")
    async def metrics(self, info: Info[Context, None]) -> CustomerMetrics:
        m = await info.context.loaders.metrics.load(self._row.id)
        days = int((info.context.now() - self._row.stage_entered_at).total_seconds() // 86400)
        return CustomerMetrics(
            open_support_issues=m.open_support_issues if m else 0,
            closed_support_issues=m.closed_support_issues if m else 0,
            last_support_issue_closed_at=m.last_support_issue_closed_at if m else None,
            contract_renewal_count=m.contract_renewal_count if m else 0,
            last_contract_renewed_at=m.last_contract_renewed_at if m else None,
            days_in_stage=max(days, 0),
        )


def parse_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise bad_input(f"{str(raw)[:64]!r} is not a valid id", Reason.INVALID_ID) from None
