"""Calls that arrive while others of their kind are under way, made together in one.

A call to PostgreSQL or Redis costs a round trip and a client's fixed work whatever it
carries. Under load, requests wait here per key (a tenant, a Redis server); a runner takes
whatever waits and makes one call for all of it. There is no timer: a call that finds a
runner free is made at once and waits for nobody, so a lone request is as fast as before,
and the busier the process, the more each call carries.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["Lanes", "Waiting"]

T = TypeVar("T")
R = TypeVar("R")

# What a runner hands on: each item with the future its caller waits on.
Waiting = list[tuple[T, "asyncio.Future[R]"]]


class _Lane(Generic[T, R]):
    __slots__ = ("running", "waiting")

    def __init__(self) -> None:
        self.waiting: deque[tuple[T, asyncio.Future[R]]] = deque()
        self.running = 0


class Lanes(Generic[T, R]):
    """Per key, at most `in_flight` runners; each takes the oldest waiting item, then those
    after it while their `weight`s stay within `max_weight` (an item heavier than that goes
    alone), and awaits `run` on them. `run` settles every future it is handed; a future it
    leaves unsettled when it fails is failed with its error."""

    def __init__(
        self,
        run: Callable[[Waiting[T, R]], Awaitable[None]],
        *,
        in_flight: int,
        weight: Callable[[T], int] = lambda _: 1,
        max_weight: int | None = None,
    ) -> None:
        if in_flight < 1:
            raise ValueError("in_flight must be at least 1")
        self._run = run
        self._in_flight = in_flight
        self._weight = weight
        self._max = max_weight
        self._lanes: dict[Hashable, _Lane[T, R]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def submit(self, key: Hashable, item: T) -> asyncio.Future[R]:
        """The future of `item`'s result. It is made whether or not anyone still waits."""
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane()
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        lane.waiting.append((item, done))
        if lane.running < self._in_flight:
            lane.running += 1
            task = asyncio.create_task(self._drain(key, lane))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return done

    async def _drain(self, key: Hashable, lane: _Lane[T, R]) -> None:
        try:
            while lane.waiting:
                batch = self._take(lane.waiting)
                try:
                    await self._run(batch)
                except BaseException as exc:
                    for _, done in batch:
                        if not done.done():
                            if isinstance(exc, asyncio.CancelledError):
                                done.cancel()
                            else:
                                done.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
        except asyncio.CancelledError:  # the process stops: nobody may wait forever
            while lane.waiting:
                lane.waiting.popleft()[1].cancel()
            raise
        finally:
            lane.running -= 1
            if not lane.running and not lane.waiting:
                del self._lanes[key]

    def _take(self, waiting: deque[tuple[T, asyncio.Future[R]]]) -> Waiting[T, R]:
        batch = [waiting.popleft()]
        if self._max is None:
            batch.extend(waiting)
            waiting.clear()
            return batch
        size = self._weight(batch[0][0])
        while waiting and size + self._weight(waiting[0][0]) <= self._max:
            size += self._weight(waiting[0][0])
            batch.append(waiting.popleft())
        return batch
