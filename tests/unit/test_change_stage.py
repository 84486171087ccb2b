"""`change_stages` against an in-memory fake of its ports: the decision logic alone.

The domain writes through its repository and never commits; here a fake unit of work plays
the use case's part (commit once, only when something was written)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

import pytest

from customer360.lifecycle import (
    DEFAULT_CONFIG,
    ChangeResult,
    ChangeStage,
    CustomerState,
    DomainError,
    Reason,
    Source,
    StageConfig,
    Transition,
    transition_id,
)
from customer360.lifecycle import change_stages as decide
from customer360.lifecycle.commands import IdempotencyRecord, StoredResult

T0 = datetime(2025, 1, 1, tzinfo=UTC)


class FakeRepo:
    def __init__(self, config: StageConfig = DEFAULT_CONFIG) -> None:
        self.config = config
        self.customers: dict[uuid.UUID, CustomerState] = {}
        self.history: list[Transition] = []
        self.keys: dict[tuple[str, str], StoredResult] = {}

    async def stage_config(self, tenant_id: str, *, for_write: bool = False) -> StageConfig:
        return self.config

    async def lock_config(self, tenant_id: str) -> None: ...

    async def stage_populations(self, tenant_id: str) -> dict[str, int]:
        return {}

    async def save_config(self, tenant_id: str, config: StageConfig) -> None: ...

    async def prepare_changes(  # type: ignore[no-untyped-def]
        self, tenant_id: str, ids: Sequence[uuid.UUID], keys: Sequence[tuple[str, str]]
    ):
        return (
            self.config,
            {i: replace(self.customers[i]) for i in ids if i in self.customers},
            {k: self.keys[k] for k in keys if k in self.keys},
        )

    async def record(
        self,
        tenant_id: str,
        transitions: Sequence[Transition],
        idempotency: Sequence[IdempotencyRecord],
    ) -> None:
        self.pending = (list(transitions), list(idempotency))
        self.written = True


class FakeUow:
    def __init__(self, repo: FakeRepo) -> None:
        self.lifecycle = repo
        self.commits = 0

    async def __aenter__(self) -> Self:
        self.lifecycle.pending = ([], [])
        self.lifecycle.written = False
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        pass

    async def commit(self) -> None:
        transitions, keys = self.lifecycle.pending
        for t in transitions:
            s = self.lifecycle.customers[t.customer_id]
            s.stage, s.version, s.entered_at, s.updated_at = (
                t.to_stage,
                t.version,
                t.changed_at,
                t.changed_at,
            )
            self.lifecycle.history.append(t)
        for k in keys:
            self.lifecycle.keys[(k.actor, k.key)] = StoredResult(k.fingerprint, k.result)
        self.commits += 1


async def change_stages(
    uow: FakeUow, commands: Sequence[ChangeStage], clock: Callable[[], datetime]
) -> list[ChangeResult | DomainError]:
    async with uow:
        outcomes = await decide(uow.lifecycle, commands, clock)
        if uow.lifecycle.written:
            await uow.commit()
    return outcomes


async def change_stage(
    uow: FakeUow, command: ChangeStage, clock: Callable[[], datetime]
) -> ChangeResult:
    (outcome,) = await change_stages(uow, [command], clock)
    if isinstance(outcome, DomainError):
        raise outcome
    return outcome


@pytest.fixture
def world() -> tuple[FakeRepo, FakeUow, uuid.UUID]:
    repo = FakeRepo()
    cid = uuid.uuid4()
    repo.customers[cid] = CustomerState(cid, "Prospect", 1, T0, T0)
    return repo, FakeUow(repo), cid


def cmd(cid: uuid.UUID, stage: str, **kw: object) -> ChangeStage:
    return ChangeStage("t", cid, stage, "user-1", Source.UI, **kw)  # type: ignore[arg-type]


def clock() -> datetime:
    return T0 + timedelta(hours=1)


async def test_a_move_writes_one_transition_with_the_next_version(world) -> None:  # type: ignore[no-untyped-def]
    repo, uow, cid = world
    r = await change_stage(uow, cmd(cid, "Active"), clock)
    assert (r.stage, r.version, r.transition.from_stage, r.transition.version) == (
        "Active",
        2,
        "Prospect",
        2,
    )  # type: ignore[union-attr]
    assert r.transition.changed_by == "user-1" and r.transition.source is Source.UI  # type: ignore[union-attr]
    assert len(repo.history) == 1 and uow.commits == 1


async def test_moving_to_the_current_stage_is_a_successful_no_op(world) -> None:  # type: ignore[no-untyped-def]
    repo, uow, cid = world
    r = await change_stage(uow, cmd(cid, "Prospect"), clock)
    assert r.transition is None and r.version == 1
    assert repo.history == [] and uow.commits == 0


async def test_stale_expected_version_is_a_conflict_even_for_a_no_op(world) -> None:  # type: ignore[no-untyped-def]
    _, uow, cid = world
    with pytest.raises(DomainError) as e:
        await change_stage(uow, cmd(cid, "Prospect", expected_version=7), clock)
    assert e.value.code.value == "CONFLICT"


async def test_conflict_comes_before_the_stage_rules(world) -> None:  # type: ignore[no-untyped-def]
    _, uow, cid = world
    with pytest.raises(DomainError) as e:
        await change_stage(uow, cmd(cid, "NoSuchStage", expected_version=9), clock)
    assert e.value.code.value == "CONFLICT"


async def test_unknown_customer_is_not_found(world) -> None:  # type: ignore[no-untyped-def]
    _, uow, _ = world
    with pytest.raises(DomainError) as e:
        await change_stage(uow, cmd(uuid.uuid4(), "Active"), clock)
    assert e.value.code.value == "NOT_FOUND"


async def test_idempotency_key_replays_the_first_result_and_refuses_other_input(world) -> None:  # type: ignore[no-untyped-def]
    repo, uow, cid = world
    first = await change_stage(uow, cmd(cid, "Active", idempotency_key="k"), clock)
    again = await change_stage(uow, cmd(cid, "Active", idempotency_key="k"), clock)
    assert again.replayed and again.transition == first.transition and len(repo.history) == 1
    with pytest.raises(DomainError) as e:
        await change_stage(uow, cmd(cid, "Onboarded", idempotency_key="k"), clock)
    assert e.value.reason is Reason.IDEMPOTENCY_KEY_REUSED


async def test_a_failed_attempt_is_not_remembered(world) -> None:  # type: ignore[no-untyped-def]
    _repo, uow, cid = world
    with pytest.raises(DomainError):
        await change_stage(uow, cmd(cid, "Churned", idempotency_key="k"), clock)
    r = await change_stage(
        uow, cmd(cid, "Churned", idempotency_key="k", reason_code="Price"), clock
    )
    assert r.stage == "Churned" and not r.replayed


async def test_bulk_items_succeed_or_fail_on_their_own_in_order(world) -> None:  # type: ignore[no-untyped-def]
    repo, uow, cid = world
    out = await change_stages(
        uow,
        [
            cmd(cid, "Active"),
            cmd(cid, "Nope"),
            cmd(uuid.uuid4(), "Active"),
            cmd(cid, "At-Risk", reason_code="Low Engagement"),
        ],
        clock,
    )
    assert isinstance(out[0], ChangeResult) and isinstance(out[3], ChangeResult)
    assert isinstance(out[1], DomainError) and out[1].reason is Reason.INVALID_STAGE
    assert isinstance(out[2], DomainError) and out[2].code.value == "NOT_FOUND"
    assert [t.version for t in repo.history] == [2, 3]
    assert repo.history[1].from_stage == "Active"


async def test_too_many_items(world) -> None:  # type: ignore[no-untyped-def]
    _, uow, cid = world
    with pytest.raises(DomainError) as e:
        await change_stages(uow, [cmd(cid, "Active")] * 1001, clock)
    assert e.value.reason is Reason.TOO_MANY_ITEMS


async def test_a_change_never_predates_the_previous_one(world) -> None:  # type: ignore[no-untyped-def]
    _repo, uow, cid = world
    r = await change_stage(uow, cmd(cid, "Active"), lambda: T0 - timedelta(days=1))
    assert r.transition.changed_at == T0  # type: ignore[union-attr]


async def test_commands_of_several_actors_keep_their_own_idempotency_keys(world) -> None:  # type: ignore[no-untyped-def]
    # given one call holding the commands of two actors (two requests sharing one batch), both
    # using the key "k", and a third command replaying the first actor's key
    repo, uow, cid = world
    first = cmd(cid, "Onboarded", idempotency_key="k")
    other = replace(cmd(cid, "Active", idempotency_key="k"), actor="user-2")
    again = cmd(cid, "Onboarded", idempotency_key="k")
    # when they are decided in that order
    a, b, c = await change_stages(uow, [first, other, again], clock)
    # then the second actor's "k" is its own key, not a reuse of the first's, and the first
    # actor's replay gets its first result back
    assert not isinstance(a, DomainError) and not isinstance(b, DomainError)
    assert (a.stage, a.version, b.stage, b.version) == ("Onboarded", 2, "Active", 3)
    assert not isinstance(c, DomainError) and c.replayed and c.transition == a.transition
    assert sorted(repo.keys) == [("user-1", "k"), ("user-2", "k")]
    assert [t.changed_by for t in repo.history] == ["user-1", "user-2"]


async def test_a_command_of_another_tenant_is_refused_before_anything_is_read(world) -> None:  # type: ignore[no-untyped-def]
    _, uow, cid = world
    with pytest.raises(ValueError, match="one tenant"):
        await change_stages(
            uow, [cmd(cid, "Active"), replace(cmd(cid, "Active"), tenant_id="u")], clock
        )


async def test_a_commands_origin_is_carried_to_its_transition(world) -> None:  # type: ignore[no-untyped-def]
    repo, uow, cid = world
    tag = object()
    await change_stage(uow, cmd(cid, "Active", origin=tag), clock)
    assert repo.history[-1].origin is tag


async def test_transition_ids_are_time_ordered_uuids_of_the_change(world) -> None:  # type: ignore[no-untyped-def]
    # given a customer moved twice, an hour apart
    _, uow, cid = world
    first = await change_stage(uow, cmd(cid, "Onboarded"), clock)
    later = await change_stage(uow, cmd(cid, "Active"), lambda: clock() + timedelta(hours=1))
    ids = [first.transition.id, later.transition.id]  # type: ignore[union-attr]
    # then each id is a UUIDv7 carrying its change's millisecond, so the later sorts after
    assert [i.version for i in ids] == [7, 7]
    stamps = [int.from_bytes(i.bytes[:6], "big") for i in ids]
    assert stamps == [int(clock().timestamp() * 1000), int(clock().timestamp() * 1000) + 3_600_000]
    assert ids[0] < ids[1]
    # and many changes in the same millisecond still get distinct ids
    assert len({transition_id(clock()) for _ in range(10_000)}) == 10_000
