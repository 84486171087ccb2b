"""Lifecycle mutations: translate input into commands for the one write path."""

from __future__ import annotations

import uuid
from datetime import datetime

import strawberry
from strawberry.types import Info

from customer360.auth.principal import Permission
from customer360.lifecycle import (
    MAX_BULK,
    ChangeResult,
    ChangeStage,
    Code,
    DomainError,
    Reason,
    Source,
    check_command,
)

from .context import Context
from .errors import ApiError, bad_input
from .once import RunsOnce
from .types import Customer, LifecycleTransition, parse_id


@strawberry.input
class UpdateLifecycleStageInput:
    customer_id: strawberry.ID
    stage: str
    reason_code: str | None = None
    expected_version: int | None = strawberry.field(
        default=None,
        description="When given and not equal to the current version, the update fails with "
        "CONFLICT.",
    )
    idempotency_key: str | None = strawberry.field(
        default=None,
        description="A retry with the same key (per principal, for 24 hours) returns the first "
        "result and changes nothing.",
    )


@strawberry.type
class UpdateLifecycleStagePayload:
    success: bool
    updated_at: datetime
    transition: LifecycleTransition | None = strawberry.field(
        description="Null when the customer was already in that stage."
    )
    _customer_id: strawberry.Private[uuid.UUID]

    @strawberry.field
    async def customer(self, info: Info[Context, None]) -> Customer:
        # Read only when asked for, and after the write: never the state before it.
        row = await info.context.loaders.customer.load(self._customer_id)
        if row is None:  # erased between the write and this read
            raise ApiError(Code.NOT_FOUND, "No such customer")
        return Customer(_row=row)


@strawberry.type
class MutationError:
    code: str
    reason: str | None
    message: str
    retry_after: int | None = strawberry.field(
        default=None,
        description="For RATE_LIMITED: seconds until the hourly budget has room again.",
    )


@strawberry.type
class BulkUpdateResult:
    customer_id: strawberry.ID
    success: bool
    transition: LifecycleTransition | None
    error: MutationError | None


@strawberry.type
class BulkUpdateLifecycleStagesPayload:
    succeeded: int
    failed: int
    results: list[BulkUpdateResult] = strawberry.field(
        description="One result per input, in input order."
    )


def _command(ctx: Context, item: UpdateLifecycleStageInput, cid: uuid.UUID) -> ChangeStage:
    command = ChangeStage(
        tenant_id=ctx.tenant_id,
        customer_id=cid,
        stage=item.stage,
        actor=ctx.principal.subject,
        source=Source.UI,
        reason_code=item.reason_code,
        expected_version=item.expected_version,
        idempotency_key=item.idempotency_key,
    )
    try:
        check_command(command)
    except DomainError as err:
        raise ApiError.from_domain(err) from None
    return command


def _payload(ctx: Context, result: ChangeResult) -> UpdateLifecycleStagePayload:
    ctx.forget(result.customer_id)
    t = result.transition
    return UpdateLifecycleStagePayload(
        success=True,
        updated_at=result.updated_at,
        transition=LifecycleTransition.of(t) if t else None,
        _customer_id=result.customer_id,
    )


@strawberry.type
class LifecycleMutation:
    @strawberry.mutation(
        description="Needs UPDATE_LIFECYCLE. Moving to the current stage is a no-op that still "
        "succeeds.",
        extensions=[RunsOnce()],
    )
    async def update_lifecycle_stage(
        self, info: Info[Context, None], input: UpdateLifecycleStageInput
    ) -> UpdateLifecycleStagePayload:
        ctx = info.context
        cmd = _command(ctx, input, parse_id(input.customer_id))
        ctx.require(Permission.UPDATE_LIFECYCLE)
        updated = await ctx.usecases.update_stages([cmd])
        (outcome,) = updated.outcomes
        if isinstance(outcome, DomainError):
            raise ApiError.from_domain(outcome, updated.retry_after)
        return _payload(ctx, outcome)

    @strawberry.mutation(
        description="Needs UPDATE_LIFECYCLE. Up to 1000 changes in one call; each succeeds or "
        "fails on its own, with the same rules as updateLifecycleStage. Each change counts "
        "against the rate limit.",
        extensions=[RunsOnce()],
    )
    async def update_lifecycle_stages(
        self, info: Info[Context, None], inputs: list[UpdateLifecycleStageInput]
    ) -> BulkUpdateLifecycleStagesPayload:
        ctx = info.context
        if len(inputs) > MAX_BULK:
            raise bad_input(f"At most {MAX_BULK} inputs per call", Reason.TOO_MANY_ITEMS)
        ctx.require(Permission.UPDATE_LIFECYCLE)
        outcomes: list[ChangeResult | DomainError | ApiError | None] = []
        commands: list[ChangeStage] = []
        for item in inputs:
            try:
                commands.append(_command(ctx, item, parse_id(item.customer_id)))
                outcomes.append(None)
            except ApiError as err:
                outcomes.append(err)
        updated = await ctx.usecases.update_stages(commands)
        applied = iter(updated.outcomes)
        outcomes = [next(applied) if o is None else o for o in outcomes]
        results = [
            _bulk_result(item, o, updated.retry_after)
            for item, o in zip(inputs, outcomes, strict=True)
        ]
        ok = sum(1 for r in results if r.success)
        return BulkUpdateLifecycleStagesPayload(
            succeeded=ok, failed=len(results) - ok, results=results
        )


def _bulk_result(
    item: UpdateLifecycleStageInput,
    outcome: ChangeResult | DomainError | ApiError | None,
    retry_after: int,
) -> BulkUpdateResult:
    if isinstance(outcome, ChangeResult):
        t = outcome.transition
        return BulkUpdateResult(
            customer_id=item.customer_id,
            success=True,
            transition=LifecycleTransition.of(t) if t else None,
            error=None,
        )
    if isinstance(outcome, DomainError):
        error = MutationError(
            code=outcome.code.value,
            reason=outcome.reason.value if outcome.reason else None,
            message=outcome.message,
            retry_after=max(retry_after, 1) if outcome.code is Code.RATE_LIMITED else None,
        )
    else:
        assert outcome is not None
        ext = outcome.extensions or {}
        error = MutationError(
            code=str(ext.get("code")), reason=ext.get("reason"), message=outcome.message
        )
    return BulkUpdateResult(
        customer_id=item.customer_id, success=False, transition=None, error=error
    )
