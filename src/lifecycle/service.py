"""`change_stages`: the one write path for lifecycle stages, whoever asks.

The domain decides and writes through its repository; it never opens or commits a unit of
work. The use case that called it (customer360.usecases) commits once, or not at all.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime

from uuid_utils.compat import uuid7

from .commands import (
    ChangeResult,
    ChangeStage,
    CustomerState,
    IdempotencyRecord,
    Source,
    StoredResult,
    Transition,
)
from .config import ConfigProposal, StageConfig
from .errors import Code, DomainError, Reason, bad_input, conflict, not_found
from .inputs import check_command, check_version
from .ports import LifecycleRepository

MAX_BULK = 1000
Clock = Callable[[], datetime]


def transition_id(at: datetime) -> uuid.UUID:
    """A history row's id, ordered by its time (UUIDv7, RFC 9562): every index keyed by it
    (the history's primary key, the seal's queue, the outbox's link) takes new entries at its
    right edge, not on a random page of an index far larger than memory."""
    return uuid7(nanoseconds=int(at.timestamp() * 1_000_000) * 1_000)


def utcnow() -> datetime:
    return datetime.now(UTC)


def check_stage_rules(
    config: StageConfig, current: str, target: str, reason_code: str | None
) -> None:
    """The tenant's rules for a move, in the contract's order."""
    if target not in config.stages:
        raise bad_input(
            f"{target!r} is not a stage of this tenant",
            Reason.INVALID_STAGE,
            stages=list(config.stages),
        )
    if target != current and not config.is_allowed(current, target):
        raise bad_input(
            f"Moving from {current!r} to {target!r} is not allowed",
            Reason.TRANSITION_NOT_ALLOWED,
            allowed=config.allowed_next_stages(current),
        )
    if config.requires_reason(target) and not (reason_code and reason_code.strip()):
        raise bad_input(f"Entering {target!r} needs a reason code", Reason.REASON_REQUIRED)


def _decide(
    cmd: ChangeStage,
    config: StageConfig,
    states: dict[uuid.UUID, CustomerState],
    stored: dict[tuple[str, str], StoredResult],
    now: datetime,
) -> tuple[ChangeResult, Transition | None]:
    check_command(cmd)
    key = (cmd.actor, cmd.idempotency_key) if cmd.idempotency_key is not None else None
    if cmd.replay_only:
        first = stored.get(key) if key is not None else None
        if first is None or first.fingerprint != cmd.fingerprint():
            raise DomainError(Code.RATE_LIMITED, "Over the limit of lifecycle updates per hour")
        return replace(first.result, replayed=True), None
    state = states.get(cmd.customer_id)
    if state is None:
        raise not_found()
    if key is not None and key in stored:
        first = stored[key]
        if first.fingerprint != cmd.fingerprint():
            raise bad_input(
                "This Idempotency-Key was used with a different request",
                Reason.IDEMPOTENCY_KEY_REUSED,
            )
        return replace(first.result, replayed=True), None
    if cmd.expected_version is not None and cmd.expected_version != state.version:
        raise conflict(
            f"Expected version {cmd.expected_version}, the customer is at {state.version}",
            current_version=state.version,
        )
    check_stage_rules(config, state.stage, cmd.stage, cmd.reason_code)
    if cmd.stage == state.stage:
        unchanged = ChangeResult(
            cmd.customer_id, state.stage, state.version, state.updated_at, None
        )
        return unchanged, None
    # A change never predates the one before it, even if clocks disagree.
    at = max(now, state.updated_at)
    transition = Transition(
        id=transition_id(at),
        tenant_id=cmd.tenant_id,
        customer_id=cmd.customer_id,
        from_stage=state.stage,
        to_stage=cmd.stage,
        changed_at=at,
        changed_by=cmd.actor,
        reason_code=cmd.reason_code,
        source=cmd.source,
        version=state.version + 1,
        config_version=config.version,
        origin=cmd.origin,
    )
    state.stage, state.version, state.entered_at, state.updated_at = (
        cmd.stage,
        transition.version,
        at,
        at,
    )
    return ChangeResult(cmd.customer_id, cmd.stage, state.version, at, transition), transition


async def change_stages(
    repo: LifecycleRepository, commands: Sequence[ChangeStage], clock: Clock = utcnow
) -> list[ChangeResult | DomainError]:
    """Apply commands of one tenant in order; each succeeds or fails on its own, as if each
    ran alone in that order. Their actors may differ (the commands of concurrent requests,
    written in one unit of work): each actor's idempotency keys are its own.

    Everything that succeeded is written through `repo` (history, counts, outbox rows,
    idempotency records) for the caller's one commit.
    """
    if not commands:
        return []
    if len(commands) > MAX_BULK:
        raise bad_input(f"At most {MAX_BULK} changes per call", Reason.TOO_MANY_ITEMS)
    tenant_id = commands[0].tenant_id
    if any(c.tenant_id != tenant_id for c in commands):
        raise ValueError("one unit of work serves one tenant")
    outcomes: list[ChangeResult | DomainError] = []
    ids = sorted({c.customer_id for c in commands})
    keys = sorted({(c.actor, c.idempotency_key) for c in commands if c.idempotency_key is not None})
    config, states, stored = await repo.prepare_changes(tenant_id, ids, keys)
    now = clock()
    transitions: list[Transition] = []
    remembered: list[IdempotencyRecord] = []
    for cmd in commands:
        try:
            result, transition = _decide(cmd, config, states, stored, now)
        except DomainError as err:
            outcomes.append(err)
            continue
        if result.replayed:
            outcomes.append(result)
            continue
        if transition is not None:
            transitions.append(transition)
        if cmd.idempotency_key is not None:
            stored[(cmd.actor, cmd.idempotency_key)] = StoredResult(cmd.fingerprint(), result)
            remembered.append(
                IdempotencyRecord(cmd.actor, cmd.idempotency_key, cmd.fingerprint(), result)
            )
        outcomes.append(result)
    if transitions or remembered:
        await repo.record(tenant_id, transitions, remembered)
    return outcomes


def start_lifecycle(
    config: StageConfig, tenant_id: str, customer_id: uuid.UUID, actor: str, at: datetime
) -> Transition:
    """A new customer's first history row: no from-stage, the tenant's initial stage."""
    return Transition(
        id=transition_id(at),
        tenant_id=tenant_id,
        customer_id=customer_id,
        from_stage=None,
        to_stage=config.initial_stage,
        changed_at=at,
        changed_by=actor,
        reason_code=None,
        source=Source.SYSTEM,
        version=1,
        config_version=config.version,
    )


async def configure_stages(
    repo: LifecycleRepository,
    tenant_id: str,
    actor: str,
    proposal: ConfigProposal,
    expected_version: int | None = None,
    clock: Clock = utcnow,
) -> StageConfig:
    """Write a validated configuration as the tenant's next version.

    Holds the tenant's configuration lock alone, so no stage change runs meanwhile and the
    check that no customer sits in a removed stage stays true until the caller's commit.
    """
    check_version(expected_version)
    await repo.lock_config(tenant_id)
    current = await repo.stage_config(tenant_id)
    if expected_version is not None and expected_version != current.version:
        raise conflict(
            f"Expected configuration version {expected_version}, it is at {current.version}",
            current_version=current.version,
        )
    proposed = proposal.build()
    populated = await repo.stage_populations(tenant_id)
    removed = sorted(s for s, n in populated.items() if n > 0 and s not in proposed.stages)
    if removed:
        raise bad_input(
            f"Stages still hold customers and cannot be removed: {removed}",
            Reason.INVALID_CONFIG,
            stages=removed,
        )
    saved = replace(proposed, version=current.version + 1, updated_at=clock(), updated_by=actor)
    await repo.save_config(tenant_id, saved)
    return saved
