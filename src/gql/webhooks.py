"""Webhooks: a tenant's admins register endpoints that stage changes are delivered to,
signed (Standard Webhooks), and read each endpoint's delivery log (docs/WEBHOOKS.md)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import Enum
from typing import Any

import strawberry
from strawberry.types import Info

from customer360.data.webhooks import Delivery, Endpoint
from customer360.lifecycle import Code, Reason
from customer360.usecases import TargetRefused

from .context import Context
from .errors import ApiError, bad_input
from .permissions import IsTenantAdmin
from .types import parse_id

MAX_DELIVERIES = 200


@strawberry.enum
class WebhookDeliveryStatus(Enum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


@strawberry.type(description="One audit event for one endpoint, and how its sending went.")
class WebhookDelivery:
    id: strawberry.ID
    endpoint_id: strawberry.ID
    event_id: str = strawberry.field(description="The CloudEvent's id, sent as webhook-id.")
    event_type: str
    customer_id: strawberry.ID
    status: WebhookDeliveryStatus
    attempts: int
    next_attempt_at: datetime | None = strawberry.field(description="While pending.")
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None

    @classmethod
    def of(cls, d: Delivery) -> WebhookDelivery:
        return cls(
            id=strawberry.ID(str(d.id)),
            endpoint_id=strawberry.ID(str(d.endpoint_id)),
            event_id=d.event_id,
            event_type=d.event_type,
            customer_id=strawberry.ID(d.customer_id),
            status=WebhookDeliveryStatus(d.status),
            attempts=d.attempts,
            next_attempt_at=d.next_attempt_at if d.status == "pending" else None,
            last_attempt_at=d.last_attempt_at,
            last_status_code=d.last_status_code,
            last_error=d.last_error,
            created_at=d.created_at,
            delivered_at=d.delivered_at,
        )


@strawberry.type
class WebhookEndpoint:
    id: strawberry.ID
    url: str
    description: str | None
    event_types: list[str] = strawberry.field(description="Empty: every event type.")
    stages: list[str] = strawberry.field(description="Target stages that fire it; empty: all.")
    active: bool = strawberry.field(description="False when paused, or disabled for failures.")
    disabled_at: datetime | None = strawberry.field(
        description="When a long run of failures disabled it (updateWebhookEndpoint with "
        "active: true enables it again)."
    )
    disabled_reason: str | None
    consecutive_failures: int
    created_at: datetime
    created_by: str
    updated_at: datetime
    previous_secret_expires_at: datetime | None = strawberry.field(
        description="After a rotation: until then, deliveries carry a signature with the "
        "previous secret too."
    )

    @classmethod
    def of(cls, e: Endpoint) -> WebhookEndpoint:
        return cls(
            id=strawberry.ID(str(e.id)),
            url=e.url,
            description=e.description,
            event_types=list(e.event_types),
            stages=list(e.stages),
            active=e.active,
            disabled_at=e.disabled_at,
            disabled_reason=e.disabled_reason,
            consecutive_failures=e.consecutive_failures,
            created_at=e.created_at,
            created_by=e.created_by,
            updated_at=e.updated_at,
            previous_secret_expires_at=e.previous_secret_until,
        )

    @strawberry.field(description="The delivery log, newest event first.")
    async def deliveries(
        self,
        info: Info[Context, None],
        status: WebhookDeliveryStatus | None = None,
        first: int | None = 50,
    ) -> list[WebhookDelivery]:
        ctx = info.context
        limit = 50 if first is None else first
        if not 0 < limit <= MAX_DELIVERIES:
            raise bad_input(f"first must be between 1 and {MAX_DELIVERIES}")
        rows = await ctx.usecases.webhook_deliveries(
            ctx.tenant_id, uuid.UUID(str(self.id)), status.value if status else None, limit
        )
        return [WebhookDelivery.of(d) for d in rows]


@strawberry.type
class WebhookEndpointWithSecret:
    endpoint: WebhookEndpoint
    secret: str = strawberry.field(
        description="whsec_...: shown this once; it verifies webhook-signature."
    )


@strawberry.input
class CreateWebhookEndpointInput:
    url: str = strawberry.field(description="https:// and a public address.")
    description: str | None = None
    event_types: list[str] | None = strawberry.field(
        default=None, description="Of audit.lifecycle.updated; empty or null: all."
    )
    stages: list[str] | None = strawberry.field(
        default=None, description="Target stages that fire it (e.g. At-Risk); empty or null: all."
    )
    active: bool = True


@strawberry.input
class UpdateWebhookEndpointInput:
    url: str | None = strawberry.UNSET
    description: str | None = strawberry.UNSET
    event_types: list[str] | None = strawberry.UNSET
    stages: list[str] | None = strawberry.UNSET
    active: bool | None = strawberry.field(
        default=strawberry.UNSET, description="true also enables an endpoint disabled for failures."
    )


async def _fields(ctx: Context, given: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in given.items():
        if value is strawberry.UNSET:
            continue
        if key in ("event_types", "stages"):
            value = list(dict.fromkeys(value or []))
        elif key in ("url", "active") and value is None:
            raise bad_input(f"{key} must not be null")
        if isinstance(value, str) and "\x00" in value:
            raise bad_input(f"{key} must not contain NUL characters")
        out[key] = value
    if out.get("description") is not None and len(out["description"]) > 500:
        raise bad_input("description: at most 500 characters")
    if out.get("stages"):
        known = (await ctx.stage_config()).stages
        unknown = [s for s in out["stages"] if s not in known]
        if unknown:
            raise bad_input(f"Unknown stages {unknown}", Reason.INVALID_STAGE)
    return out


def _refused(exc: ValueError) -> ApiError:
    return bad_input(str(exc))


def _not_found(what: str) -> ApiError:
    return ApiError(Code.NOT_FOUND, f"No such {what}")


@strawberry.type
class WebhookQuery:
    @strawberry.field(
        permission_classes=[IsTenantAdmin],
        description="Needs TENANT_ADMIN (or SUPER_ADMIN). The tenant's webhook endpoints.",
    )
    async def webhook_endpoints(self, info: Info[Context, None]) -> list[WebhookEndpoint]:
        ctx = info.context
        return [WebhookEndpoint.of(e) for e in await ctx.usecases.webhook_endpoints(ctx.tenant_id)]

    @strawberry.field(
        permission_classes=[IsTenantAdmin],
        description="Needs TENANT_ADMIN (or SUPER_ADMIN). One endpoint; null when the tenant "
        "has none with that id.",
    )
    async def webhook_endpoint(
        self, info: Info[Context, None], id: strawberry.ID
    ) -> WebhookEndpoint | None:
        ctx = info.context
        found = await ctx.usecases.webhook_endpoints(ctx.tenant_id, parse_id(id))
        return WebhookEndpoint.of(found[0]) if found else None


@strawberry.type
class WebhookMutation:
    @strawberry.mutation(
        permission_classes=[IsTenantAdmin],
        description="Needs TENANT_ADMIN (or SUPER_ADMIN). Registers an endpoint; its signing "
        "secret is in this answer only.",
    )
    async def create_webhook_endpoint(
        self, info: Info[Context, None], input: CreateWebhookEndpointInput
    ) -> WebhookEndpointWithSecret:
        ctx = info.context
        fields = await _fields(ctx, vars(input))
        try:
            endpoint, secret = await ctx.usecases.create_webhook(
                ctx.tenant_id, ctx.principal.subject, fields
            )
        except (TargetRefused, ValueError) as exc:
            raise _refused(exc) from None
        return WebhookEndpointWithSecret(endpoint=WebhookEndpoint.of(endpoint), secret=secret)

    @strawberry.mutation(
        permission_classes=[IsTenantAdmin],
        description="Needs TENANT_ADMIN (or SUPER_ADMIN). Changes the given fields; "
        "active: false pauses it, active: true (re-)enables it.",
    )
    async def update_webhook_endpoint(
        self, info: Info[Context, None], id: strawberry.ID, input: UpdateWebhookEndpointInput
    ) -> WebhookEndpoint:
        ctx = info.context
        eid = parse_id(id)
        fields = await _fields(ctx, vars(input))
        try:
            endpoint = await ctx.usecases.update_webhook(ctx.tenant_id, eid, fields)
        except (TargetRefused, ValueError) as exc:
            raise _refused(exc) from None
        if endpoint is None:
            raise _not_found("webhook endpoint")
        return WebhookEndpoint.of(endpoint)

    @strawberry.mutation(
        permission_classes=[IsTenantAdmin],
        description="Needs TENANT_ADMIN (or SUPER_ADMIN). A new signing secret, shown this "
        "once; the previous one also signs for 24 hours.",
    )
    async def rotate_webhook_secret(
        self, info: Info[Context, None], id: strawberry.ID
    ) -> WebhookEndpointWithSecret:
        ctx = info.context
        rotated = await ctx.usecases.rotate_webhook_secret(ctx.tenant_id, parse_id(id))
        if rotated is None:
            raise _not_found("webhook endpoint")
        endpoint, secret = rotated
        return WebhookEndpointWithSecret(endpoint=WebhookEndpoint.of(endpoint), secret=secret)

    @strawberry.mutation(
        permission_classes=[IsTenantAdmin],
        description="Needs TENANT_ADMIN (or SUPER_ADMIN). Removes an endpoint and its log.",
    )
    async def delete_webhook_endpoint(self, info: Info[Context, None], id: strawberry.ID) -> bool:
        ctx = info.context
        if not await ctx.usecases.delete_webhook(ctx.tenant_id, parse_id(id)):
            raise _not_found("webhook endpoint")
        return True

    @strawberry.mutation(
        permission_classes=[IsTenantAdmin],
        description="Needs TENANT_ADMIN (or SUPER_ADMIN). Sends one delivery again (same "
        "webhook-id), in its place in its customer's order.",
    )
    async def replay_webhook_delivery(
        self, info: Info[Context, None], id: strawberry.ID
    ) -> WebhookDelivery:
        ctx = info.context
        found = await ctx.usecases.replay_webhook_delivery(ctx.tenant_id, parse_id(id))
        if found is None:
            raise _not_found("webhook delivery")
        return WebhookDelivery.of(found)
