"""Concurrent requests' stage changes of one tenant, written in one unit of work.

A request's changes alone pay a transaction: BEGIN, the statement that locks and reads, the
write, COMMIT and its WAL flush, each a round trip. Under load, requests of a tenant queue
here, and a batch takes whatever queued while the batches before it ran; there is no
timer, so a lone request is written at once and waits for nobody. Round trips and flushes
are then shared by everyone in the batch (docs/WRITE_PATH.md, "Concurrent requests, one
transaction").

What each request gets is what it would get had the requests run alone, one after another
in their order of arrival: `change_stages` decides each command on the state the ones before
it left. A batch of several requests that fails before its commit (a statement refused, a
connection lost) wrote nothing, and each of its requests is written again alone, so one
request's failure never becomes another's. A failure at the commit itself leaves unknown
whether anything was kept, as for a request alone: every request of that batch gets it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from customer360.lifecycle import ChangeResult, ChangeStage, DomainError
from customer360.lifecycle.service import MAX_BULK
from customer360.observability import WRITE_BATCH

__all__ = ["Batches", "CommitFailed", "Outcomes", "Write"]

Outcomes = list[ChangeResult | DomainError]
Write = Callable[[Sequence[ChangeStage]], Awaitable[Outcomes]]


class CommitFailed(Exception):
    """Raised by a `Write` whose COMMIT failed: the batch must not be written again. Its
    requests get the cause."""


class _Lane:
    """One tenant's requests waiting, and how many of its batches are being written."""

    __slots__ = ("running", "waiting")

    def __init__(self) -> None:
        self.waiting: deque[tuple[Sequence[ChangeStage], asyncio.Future[Outcomes]]] = deque()
        self.running = 0


class Batches:
    """Writes each tenant's queued requests, `in_flight` batches at a time per tenant, at
    most `MAX_BULK` commands a batch (a larger request goes alone, and is refused for it)."""

    def __init__(self, write: Write, *, in_flight: int) -> None:
        if in_flight < 1:
            raise ValueError("in_flight must be at least 1")
        self._write = write
        self._in_flight = in_flight
        self._lanes: dict[str, _Lane] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, commands: Sequence[ChangeStage]) -> asyncio.Future[Outcomes]:
        """The outcomes of `commands` (one tenant's, not empty), once written. The batch is
        written whether or not anyone still waits for it."""
        tenant = commands[0].tenant_id
        lane = self._lanes.get(tenant)
        if lane is None:
            lane = self._lanes[tenant] = _Lane()
        done: asyncio.Future[Outcomes] = asyncio.get_running_loop().create_future()
        lane.waiting.append((commands, done))
        if lane.running < self._in_flight:
            lane.running += 1
            task = asyncio.create_task(self._drain(tenant, lane))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return done

    async def _drain(self, tenant: str, lane: _Lane) -> None:
        try:
            while lane.waiting:
                await self._run(_take(lane.waiting))
        except asyncio.CancelledError:
            while lane.waiting:
                lane.waiting.popleft()[1].cancel()
            raise
        finally:
            lane.running -= 1
            if not lane.running and not lane.waiting:
                del self._lanes[tenant]

    async def _run(
        self, batch: list[tuple[Sequence[ChangeStage], asyncio.Future[Outcomes]]]
    ) -> None:
        WRITE_BATCH.observe(len(batch))
        commands = [c for cmds, _ in batch for c in cmds]
        try:
            outcomes = await self._write(commands)
        except asyncio.CancelledError:  # the process stops: nobody may wait forever
            for _, done in batch:
                done.cancel()
            raise
        except CommitFailed as exc:
            cause = exc.__cause__ or exc
            for _, done in batch:
                _fail(done, cause)
            return
        except Exception as exc:
            if len(batch) == 1:
                _fail(batch[0][1], exc)
                return
            for cmds, done in batch:  # nothing was written: each alone, in order
                await self._run([(cmds, done)])
            return
        start = 0
        for cmds, done in batch:
            if not done.done():
                done.set_result(outcomes[start : start + len(cmds)])
            start += len(cmds)


def _take(
    waiting: deque[tuple[Sequence[ChangeStage], asyncio.Future[Outcomes]]],
) -> list[tuple[Sequence[ChangeStage], asyncio.Future[Outcomes]]]:
    """The next batch: the oldest request, then those after it while the batch holds at most
    MAX_BULK commands and all are of one tenant's lane."""
    batch = [waiting.popleft()]
    size = len(batch[0][0])
    while waiting and size + len(waiting[0][0]) <= MAX_BULK:
        size += len(waiting[0][0])
        batch.append(waiting.popleft())
    return batch


def _fail(done: asyncio.Future[Outcomes], exc: BaseException) -> None:
    if not done.done():
        done.set_exception(exc)
