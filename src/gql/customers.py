"""Customer queries: one customer, the filtered list, the stage summary, the viewer."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.types import Info

from customer360.auth.principal import Permission as PermissionValue
from customer360.data.queries import ORDERINGS, SORT_KEY, CustomerFilterSpec
from customer360.lifecycle import Reason

from .context import Context
from .errors import bad_input
from .pagination import Page, check_first, decode_cursor, encode_cursor, scope_of
from .permissions import CanViewLifecycle
from .projection import reads, rows_below
from .types import Customer, CustomerTier, PageInfo, Permission, parse_id


@strawberry.type
class Viewer:
    id: strawberry.ID = strawberry.field(description="The principal in its tenant.")
    subject: str
    tenant_id: str
    roles: list[str]
    permissions: list[Permission]  # type: ignore[valid-type]


@strawberry.enum
class CustomerOrder(Enum):
    CREATED_AT_DESC = "CREATED_AT_DESC"
    UPDATED_AT_DESC = "UPDATED_AT_DESC"
    NAME_ASC = "NAME_ASC"
    STAGE_ENTERED_AT_DESC = "STAGE_ENTERED_AT_DESC"


@strawberry.input
class CustomerFilter:
    stage: str | None = strawberry.field(
        default=None, description='Exact stage name, e.g. "At-Risk".'
    )
    stages: list[str] | None = None
    tier: CustomerTier | None = None
    tag: str | None = None
    assigned_to: str | None = None
    search: str | None = strawberry.field(
        default=None, description="Case-insensitive match on name, email or company name."
    )


def _edge_cursor(self: CustomerEdge) -> str:
    return self._page.cursor(self.node._row)


@strawberry.type
class CustomerEdge:
    cursor: str = reads(SORT_KEY, resolver=_edge_cursor)
    node: Customer = reads(same_row=True)
    _page: strawberry.Private[Page]


@strawberry.type
class CustomerConnection:
    edges: list[CustomerEdge] = reads(same_row=True)
    page_info: PageInfo = reads(SORT_KEY)  # its cursors
    _count: strawberry.Private[Any]

    @reads()
    async def total_count(self) -> int:
        count: int = await self._count()
        return count


@strawberry.type
class StageCount:
    stage: str
    count: int


@strawberry.type
class LifecycleSummary:
    total: int
    stages: list[StageCount] = strawberry.field(
        description="One entry per configured stage, in configured order, zero counts included."
    )
    generated_at: datetime


async def _filter_spec(ctx: Context, f: CustomerFilter | None) -> CustomerFilterSpec:
    if f is None:
        return CustomerFilterSpec()
    texts = [f.stage, f.tag, f.assigned_to, f.search, *(f.stages or [])]
    if any(t is not None and "\x00" in t for t in texts):
        raise bad_input("Filter text must not contain NUL characters")
    stages: tuple[str, ...] | None = None
    if f.stage is not None or f.stages is not None:
        wanted = [f.stage] if f.stage is not None else list(f.stages or [])
        if f.stage is not None and f.stages is not None:
            wanted = [s for s in f.stages if s == f.stage]
        known = (await ctx.stage_config()).stages
        unknown = [s for s in [f.stage, *(f.stages or [])] if s is not None and s not in known]
        if unknown:
            raise bad_input(f"Unknown stages {unknown}", Reason.INVALID_STAGE)
        stages = tuple(wanted)
    search = f.search.strip() if f.search else None
    return CustomerFilterSpec(
        stages=stages,
        tier=f.tier.value if f.tier else None,
        tag=f.tag,
        assigned_to=f.assigned_to,
        search=search or None,
    )


def _sort_keys(order: str, row: Any) -> list[Any]:
    col = ORDERINGS[order].columns[0]
    value = getattr(row, col)
    return [value.isoformat() if isinstance(value, datetime) else value, str(row.id)]


def _after_keys(order: str, keys: list[Any]) -> tuple[Any, ...]:
    try:
        first, ident = keys
        if not isinstance(first, str) or not isinstance(ident, str):
            raise TypeError
        value: Any = first if order == "NAME_ASC" else datetime.fromisoformat(first)
        return (value, uuid.UUID(ident))
    except (ValueError, TypeError):
        raise bad_input("Unreadable cursor", Reason.INVALID_CURSOR) from None


async def customer_page(
    ctx: Context,
    filter: CustomerFilter | None,
    order_by: CustomerOrder | None,
    first: int | None,
    after: str | None,
    columns: frozenset[str] | None = None,
) -> Page:
    limit = check_first(50 if first is None else first)
    order = (order_by or CustomerOrder.CREATED_AT_DESC).value
    spec = await _filter_spec(ctx, filter)
    scope = scope_of(ctx.tenant_id, "customers", order, repr(spec))
    after_keys = _after_keys(order, decode_cursor(after, scope)) if after is not None else None
    rows = list(
        await ctx.reads.list_customers(ctx.tenant_id, spec, order, limit + 1, after_keys, columns)
    )
    if columns is None:  # whole rows: the customer loader may answer with them
        ctx.loaders.known.update((row.id, row) for row in rows[:limit])

    async def count() -> int:
        return await ctx.reads.count_customers(ctx.tenant_id, spec)

    return Page(
        rows=rows[:limit],
        cursor=lambda row: encode_cursor(scope, _sort_keys(order, row)),
        has_next=len(rows) > limit,
        has_previous=after is not None,
        count=count,
    )


@strawberry.type
class CustomerQuery:
    @strawberry.field(description="The signed-in principal as the gateway sees it.")
    def viewer(self, info: Info[Context, None]) -> Viewer:
        p = info.context.principal
        return Viewer(
            id=strawberry.ID(f"{p.tenant_id}:{p.subject}"),
            subject=p.subject,
            tenant_id=p.tenant_id,
            roles=list(p.roles),
            permissions=[x for x in PermissionValue if x in p.permissions],
        )

    @strawberry.field(
        permission_classes=[CanViewLifecycle],
        description="One customer of the viewer's tenant; null when it does not exist there.",
    )
    async def customer(self, info: Info[Context, None], id: strawberry.ID) -> Customer | None:
        row = await info.context.loaders.customer.load(parse_id(id))
        return Customer(_row=row) if row is not None else None

    @rows_below(
        permission_classes=[CanViewLifecycle],
        description="Customers of the viewer's tenant, in `orderBy` order.",
    )
    async def customers(
        self,
        info: Info[Context, None],
        filter: CustomerFilter | None = None,
        order_by: CustomerOrder | None = CustomerOrder.CREATED_AT_DESC,
        first: int | None = 50,
        after: str | None = None,
    ) -> CustomerConnection:
        # The compiled path's info says which columns its selection reads (projection.py);
        # strawberry's has no such attribute, and reads whole rows.
        columns = getattr(info, "row_columns", None)
        page = await customer_page(info.context, filter, order_by, first, after, columns)
        edges = [CustomerEdge(node=Customer(_row=row), _page=page) for row in page.rows]
        return CustomerConnection(edges=edges, page_info=PageInfo(_page=page), _count=page.count)

    @strawberry.field(
        permission_classes=[CanViewLifecycle],
        description="Counts per lifecycle stage for the viewer's tenant.",
    )
    async def lifecycle_summary(self, info: Info[Context, None]) -> LifecycleSummary:
        ctx = info.context
        config = await ctx.stage_config()
        counts = await ctx.reads.stage_counts(ctx.tenant_id)
        stages = [StageCount(stage=s, count=counts.get(s, 0)) for s in config.stages]
        return LifecycleSummary(
            total=sum(s.count for s in stages), stages=stages, generated_at=ctx.now()
        )
