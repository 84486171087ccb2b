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
from collections.abc import Awaitable, Callable, Sequence

from customer360.coalesce import Lanes, Waiting
from customer360.lifecycle import ChangeResult, ChangeStage, DomainError
from customer360.lifecycle.service import MAX_BULK
from customer360.observability import WRITE_BATCH

__all__ = ["Batches", "CommitFailed", "Outcomes", "Write"]

Outcomes = list[ChangeResult | DomainError]
Write = Callable[[Sequence[ChangeStage]], Awaitable[Outcomes]]


class CommitFailed(Exception):
    """Raised by a `Write` whose COMMIT failed: the batch must not be written again. Its
    requests get the cause."""


class Batches:
    """Writes each tenant's queued requests, `in_flight` batches at a time per tenant, at
    most `MAX_BULK` commands a batch (a larger request goes alone, and is refused for it)."""

    def __init__(self, write: Write, *, in_flight: int) -> None:
        self._write = write
        self._lanes: Lanes[Sequence[ChangeStage], Outcomes] = Lanes(
            self._run, in_flight=in_flight, weight=len, max_weight=MAX_BULK
        )

    def submit(self, commands: Sequence[ChangeStage]) -> asyncio.Future[Outcomes]:
        """The outcomes of `commands` (one tenant's, not empty), once written. The batch is
        written whether or not anyone still waits for it."""
        return self._lanes.submit(commands[0].tenant_id, commands)

    async def _run(self, batch: Waiting[Sequence[ChangeStage], Outcomes]) -> None:
        WRITE_BATCH.observe(len(batch))
        commands = [c for cmds, _ in batch for c in cmds]
        try:
            outcomes = await self._write(commands)
        except CommitFailed as exc:
            cause = exc.__cause__ or exc
            for _, done in batch:
                _fail(done, cause)
            return
        except Exception as exc:
            if len(batch) == 1:
                _fail(batch[0][1], exc)
                return
            for one in batch:  # nothing was written: each alone, in order
                await self._run([one])
            return
        start = 0
        for cmds, done in batch:
            if not done.done():
                done.set_result(outcomes[start : start + len(cmds)])
            start += len(cmds)


def _fail(done: asyncio.Future[Outcomes], exc: BaseException) -> None:
    if not done.done():
        done.set_exception(exc)
