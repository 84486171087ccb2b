"""customer360.batching: who shares a transaction, what each request gets back, and what a
failure does to the others. The write is a fake here; tests/integration/test_batched_writes.py
writes through PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from customer360.batching import Batches, CommitFailed, Outcomes
from customer360.lifecycle import ChangeResult, ChangeStage, Source
from customer360.lifecycle.service import MAX_BULK

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ask(stage: str, tenant: str = "t", n: int = 1) -> list[ChangeStage]:
    return [ChangeStage(tenant, uuid.uuid4(), stage, "user", Source.API) for _ in range(n)]


class FakeWrite:
    """Answers each command with a result naming its stage; waits for `gate` while it is
    closed; fails a batch holding a command whose stage is in `refuse` (before commit) or
    `commit_fails` (at commit)."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.refuse: set[str] = set()
        self.commit_fails: set[str] = set()
        self.running = 0
        self.most_running = 0

    async def __call__(self, commands: Sequence[ChangeStage]) -> Outcomes:
        stages = [c.stage for c in commands]
        self.batches.append(stages)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.gate.wait()
            if self.refuse & set(stages):
                raise RuntimeError("refused")
            if self.commit_fails & set(stages):
                raise CommitFailed from ConnectionResetError("lost at commit")
            return [ChangeResult(c.customer_id, c.stage, 2, T0, None) for c in commands]
        finally:
            self.running -= 1


async def behind_a_batch(write: FakeWrite) -> tuple[Batches, asyncio.Future[Outcomes]]:
    """One batch at a time, the first one written and held at `write`'s closed gate: what is
    submitted next waits for it."""
    write.gate.clear()
    batches = Batches(write, in_flight=1)
    first = batches.submit(ask("A"))
    await asyncio.sleep(0)
    return batches, first


async def test_a_lone_request_is_written_at_once_alone() -> None:
    write = FakeWrite()
    batches = Batches(write, in_flight=1)
    (outcome,) = await batches.submit(ask("A"))
    assert isinstance(outcome, ChangeResult) and outcome.stage == "A"
    assert write.batches == [["A"]]


async def test_requests_queued_behind_a_batch_share_the_next_and_get_their_own_outcomes() -> None:
    # given a batch being written
    write = FakeWrite()
    batches, first = await behind_a_batch(write)
    # when three requests arrive meanwhile, one of them with two commands
    later = [batches.submit(ask("B")), batches.submit(ask("C", n=2)), batches.submit(ask("D"))]
    write.gate.set()
    # then they are written together, in arrival order, and each gets its own slice
    assert [o.stage for o in await first] == ["A"]  # type: ignore[union-attr]
    got = [[o.stage for o in await f] for f in later]  # type: ignore[union-attr]
    assert got == [["B"], ["C", "C"], ["D"]]
    assert write.batches == [["A"], ["B", "C", "C", "D"]]


async def test_at_most_in_flight_batches_of_a_tenant_run_at_once_other_tenants_apart() -> None:
    write = FakeWrite()
    write.gate.clear()
    batches = Batches(write, in_flight=2)
    mine = []
    for stage in "ABCDE":  # A and B each find a writer free, the others wait
        mine.append(batches.submit(ask(stage)))
        await asyncio.sleep(0)
    theirs = batches.submit(ask("Z", tenant="u"))
    await asyncio.sleep(0.01)
    # two batches of tenant t and one of u
    assert write.running == 3
    write.gate.set()
    await asyncio.gather(*mine, theirs)
    assert sorted(write.batches) == [["A"], ["B"], ["C", "D", "E"], ["Z"]]
    assert write.most_running == 3


async def test_a_batch_holds_at_most_max_bulk_commands() -> None:
    write = FakeWrite()
    batches, first = await behind_a_batch(write)
    big = [batches.submit(ask("B", n=MAX_BULK // 2 + 1)) for _ in range(2)]
    write.gate.set()
    await asyncio.gather(first, *big)
    assert [len(b) for b in write.batches] == [1, MAX_BULK // 2 + 1, MAX_BULK // 2 + 1]


async def test_a_batch_refused_before_commit_is_written_again_one_request_at_a_time() -> None:
    # given three requests sharing a batch, the middle one's change refused by the database
    write = FakeWrite()
    write.refuse = {"bad"}
    batches, first = await behind_a_batch(write)
    shared = [batches.submit(ask("B")), batches.submit(ask("bad")), batches.submit(ask("C"))]
    write.gate.set()
    await first
    # then the others are written, and only the refused request gets the error
    b, bad, c = await asyncio.gather(*shared, return_exceptions=True)
    assert [o.stage for o in b] == ["B"] and [o.stage for o in c] == ["C"]  # type: ignore[union-attr]
    assert isinstance(bad, RuntimeError)
    assert write.batches == [["A"], ["B", "bad", "C"], ["B"], ["bad"], ["C"]]


async def test_a_failed_commit_is_every_requests_and_nothing_is_written_again() -> None:
    write = FakeWrite()
    write.commit_fails = {"B"}
    batches, first = await behind_a_batch(write)
    shared = [batches.submit(ask("B")), batches.submit(ask("C"))]
    write.gate.set()
    await first
    errors = await asyncio.gather(*shared, return_exceptions=True)
    assert [type(e) for e in errors] == [ConnectionResetError, ConnectionResetError]
    assert write.batches == [["A"], ["B", "C"]]


async def test_a_request_given_up_on_is_written_all_the_same() -> None:
    write = FakeWrite()
    write.gate.clear()
    batches = Batches(write, in_flight=1)
    done = batches.submit(ask("A"))
    waiter = asyncio.ensure_future(asyncio.shield(done))
    await asyncio.sleep(0)
    waiter.cancel()
    write.gate.set()
    assert [o.stage for o in await done] == ["A"]  # type: ignore[union-attr]
    assert write.batches == [["A"]]


async def test_stopping_cancels_the_batch_and_whoever_waits_behind_it() -> None:
    others = asyncio.all_tasks()  # the session's loop runs other tests' servers: not theirs
    write = FakeWrite()
    batches, first = await behind_a_batch(write)
    queued = batches.submit(ask("B"))
    for task in asyncio.all_tasks() - others:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    with pytest.raises(asyncio.CancelledError):
        await queued
