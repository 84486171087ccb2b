"""The tenant's stage configuration: query and mutation."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry.types import Info

from customer360.auth.principal import Permission
from customer360.lifecycle import ConfigProposal, DomainError, StageConfig
from customer360.lifecycle.inputs import check_version

from .context import Context
from .errors import ApiError
from .permissions import CanViewLifecycle


@strawberry.type
class StageTransitionRule:
    from_: str = strawberry.field(name="from")
    to: list[str]


@strawberry.type
class StageEventRule:
    event_type: str = strawberry.field(description="A consumed event type, e.g. contract.renewed.")
    to_stage: str


@strawberry.type
class LifecycleStageConfig:
    id: strawberry.ID = strawberry.field(
        description="The tenant's configuration, whichever its version: a saved configuration "
        "replaces the cached one in client caches."
    )
    stages: list[str]
    required_reason_codes: list[str]
    transitions: list[StageTransitionRule]
    initial_stage: str
    event_rules: list[StageEventRule]
    version: int
    updated_at: datetime | None
    updated_by: str | None

    @classmethod
    def of(cls, c: StageConfig, tenant_id: str) -> LifecycleStageConfig:
        return cls(
            id=strawberry.ID(f"stage-config:{tenant_id}"),
            stages=list(c.stages),
            required_reason_codes=[s for s in c.stages if s in c.required_reason_codes],
            transitions=[
                StageTransitionRule(from_=k, to=list(v)) for k, v in c.transitions.items()
            ],
            initial_stage=c.initial_stage,
            event_rules=[
                StageEventRule(event_type=r.event_type, to_stage=r.to_stage) for r in c.event_rules
            ],
            version=c.version,
            updated_at=c.updated_at,
            updated_by=c.updated_by,
        )


@strawberry.input
class StageTransitionRuleInput:
    from_: str = strawberry.field(name="from")
    to: list[str]


@strawberry.input
class StageEventRuleInput:
    event_type: str
    to_stage: str


@strawberry.input
class LifecycleStageConfigInput:
    stages: list[str]
    required_reason_codes: list[str] | None = strawberry.field(default_factory=list)
    transitions: list[StageTransitionRuleInput] | None = strawberry.field(default_factory=list)
    initial_stage: str | None = None
    event_rules: list[StageEventRuleInput] | None = strawberry.field(default_factory=list)
    expected_version: int | None = None


@strawberry.type
class StageConfigQuery:
    @strawberry.field(
        permission_classes=[CanViewLifecycle],
        description="The viewer's tenant's lifecycle stage configuration.",
    )
    async def lifecycle_stage_config(self, info: Info[Context, None]) -> LifecycleStageConfig:
        ctx = info.context
        return LifecycleStageConfig.of(await ctx.stage_config(), ctx.tenant_id)


@strawberry.type
class StageConfigMutation:
    @strawberry.mutation(
        description="Needs CONFIGURE_STAGES. Replaces the tenant's configuration as a whole."
    )
    async def configure_lifecycle_stages(
        self, info: Info[Context, None], input: LifecycleStageConfigInput
    ) -> LifecycleStageConfig:
        ctx = info.context
        try:
            check_version(input.expected_version)  # malformed (400) answers before 403
        except DomainError as err:
            raise ApiError.from_domain(err) from None
        ctx.require(Permission.CONFIGURE_STAGES)
        proposal = ConfigProposal(
            input.stages,
            input.required_reason_codes or [],
            [(t.from_, t.to) for t in input.transitions or []],
            input.initial_stage,
            [(r.event_type, r.to_stage) for r in input.event_rules or []],
        )
        try:
            saved = await ctx.usecases.configure_stages(
                ctx.tenant_id, ctx.principal.subject, proposal, input.expected_version
            )
        except DomainError as err:
            raise ApiError.from_domain(err) from None
        ctx.reads.forget_config(ctx.tenant_id)
        ctx.use_config(saved)
        return LifecycleStageConfig.of(saved, ctx.tenant_id)
