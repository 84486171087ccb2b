"""`lifecycleChanged`: live changes from the hub, with replay from PostgreSQL history."""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import AsyncGenerator

import strawberry
from strawberry.types import Info

from customer360.data.cloudevents import transition_from_data
from customer360.lifecycle import Code, Reason
from customer360.observability import SUBSCRIPTIONS

from .context import Context
from .errors import ApiError, bad_input
from .pagination import decode_cursor, encode_cursor, scope_of
from .permissions import CanViewLifecycle
from .types import Customer, LifecycleTransition, parse_id

RESYNC_WINDOW = 1000  # positions to look back after a pub/sub reconnect
SEEN = 10_000
WAKE_SECONDS = 15.0


@strawberry.type
class LifecycleChangeEvent:
    transition: LifecycleTransition
    entered: bool = strawberry.field(
        description="True when the customer moved into the `stage` the subscription named "
        "(or into any stage, without one)."
    )
    cursor: str = strawberry.field(
        description="Opaque position of this change; pass it as `after` to resume."
    )
    _customer_id: strawberry.Private[uuid.UUID]

    @strawberry.field
    async def customer(self, info: Info[Context, None]) -> Customer:
        ctx = info.context
        # Read fresh for every event: a subscription lives long, DataLoader caches must not
        # (fields below, like metrics, load through them).
        ctx.renew()
        rows = await ctx.reads.customers_by_id(ctx.tenant_id, [self._customer_id])
        row = rows.get(self._customer_id)
        if row is None:
            raise ApiError(Code.NOT_FOUND, "No such customer")
        return Customer(_row=row)


class _Filter:
    def __init__(self, stage: str | None, customer_id: uuid.UUID | None) -> None:
        self.stage, self.customer_id = stage, customer_id

    def matches(self, t: LifecycleTransition) -> bool:
        if self.customer_id is not None and str(self.customer_id) != t.customer_id:
            return False
        return self.stage is None or self.stage in (t.to_stage, t.from_stage)

    def entered(self, t: LifecycleTransition) -> bool:
        return self.stage is None or t.to_stage == self.stage


def _scope(tenant_id: str) -> str:
    return scope_of(tenant_id, "lifecycleChanged")


@strawberry.type
class PositionQuery:
    @strawberry.field(
        permission_classes=[CanViewLifecycle],
        description="The position of the newest committed change of the viewer's tenant, as a "
        "`lifecycleChanged` cursor. Read it before loading a list, subscribe with `after:` it, "
        "and no change committed in between is missed, even before the first event arrives.",
    )
    async def lifecycle_position(self, info: Info[Context, None]) -> str:
        ctx = info.context
        return encode_cursor(_scope(ctx.tenant_id), [await ctx.reads.last_seq(ctx.tenant_id)])


@strawberry.type
class Subscription:
    @strawberry.subscription(
        permission_classes=[CanViewLifecycle],
        description="Lifecycle changes in the viewer's tenant as they commit. With `stage`, "
        "only changes into or out of that stage: the live At-Risk list. With `customerId`, "
        "only that customer's changes. With `after` (the `cursor` of the last event a client "
        "saw), the changes committed since then are replayed first, so a reconnecting UI "
        "misses nothing.",
    )
    async def lifecycle_changed(
        self,
        info: Info[Context, None],
        stage: str | None = None,
        customer_id: strawberry.ID | None = None,
        after: str | None = None,
    ) -> AsyncGenerator[LifecycleChangeEvent, None]:
        ctx = info.context
        wanted = _Filter(stage, parse_id(customer_id) if customer_id is not None else None)
        scope = _scope(ctx.tenant_id)
        last = 0
        if after is not None:
            keys = decode_cursor(after, scope)
            if len(keys) != 1 or not isinstance(keys[0], int) or not 0 <= keys[0] < 2**62:
                raise bad_input("Unreadable cursor", Reason.INVALID_CURSOR)
            last = keys[0]
        seen: deque[int] = deque(maxlen=SEEN)
        seen_set: set[int] = set()

        def fresh(seq: int) -> bool:
            if seq in seen_set:
                return False
            if len(seen) == seen.maxlen:
                seen_set.discard(seen[0])
            seen.append(seq)
            seen_set.add(seq)
            return True

        def event(t: LifecycleTransition, seq: int) -> LifecycleChangeEvent:
            return LifecycleChangeEvent(
                transition=t,
                entered=wanted.entered(t),
                cursor=encode_cursor(scope, [seq]),
                _customer_id=uuid.UUID(t.customer_id),
            )

        async def replay(since: int) -> AsyncGenerator[LifecycleChangeEvent, None]:
            nonlocal last
            while True:
                rows = await ctx.reads.history_since(
                    ctx.tenant_id, since, wanted.customer_id, wanted.stage
                )
                for r in rows:
                    since = max(since, r.seq)
                    if fresh(r.seq):
                        last = max(last, r.seq)
                        yield event(LifecycleTransition.of(r), r.seq)
                if len(rows) < 500:
                    return

        if after is None:
            # A new subscriber wants the changes from now on, also when replaying a resync:
            # "now" is when it asked, not when Redis confirmed its tenant's channel (the
            # tenant's first subscriber in this process waits for that), so what was sealed
            # in between is replayed below.
            last = await ctx.reads.last_seq(ctx.tenant_id)
        floor = last
        # Listen first, then replay: what commits meanwhile is queued, and deduplicated.
        counted = ctx.websocket is not None  # a group's shared run is counted per member
        if counted:
            SUBSCRIPTIONS.inc()
        try:
            async with ctx.live.subscribe(ctx.tenant_id) as sub:
                async for e in replay(last):
                    yield e
                while True:
                    try:
                        message = await asyncio.wait_for(sub.queue.get(), WAKE_SECONDS)
                    except TimeoutError:
                        ctx.check_not_expired()
                        continue
                    ctx.check_not_expired()
                    if message.get("slow"):
                        await ctx.close_socket(4408, "Subscriber too slow")
                        return
                    if message.get("resync"):
                        async for e in replay(max(floor, last - RESYNC_WINDOW)):
                            yield e
                        continue
                    seq, data = message.get("seq"), message["event"]["data"]
                    t = LifecycleTransition.of(transition_from_data(ctx.tenant_id, data))
                    if isinstance(seq, int) and wanted.matches(t) and fresh(seq):
                        last = max(last, seq)
                        yield event(t, seq)
        finally:
            if counted:
                SUBSCRIPTIONS.dec()
