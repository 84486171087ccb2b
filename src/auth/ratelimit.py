"""1000 lifecycle updates per (tenant, sub) in any rolling hour, across every process.

A sliding window in Redis (a sorted set of reservation ids scored by time), checked and
reserved in one Lua call. Slots are reserved before a write and handed back for what was
refused or replayed, so only accepted changes count. If Redis cannot answer, updates are
refused (fail closed); reads never ask.

The calls of concurrent requests go to Redis together, one pipeline of scripts per round
trip (customer360.coalesce): each script is still its own atomic check of its own key, so
windows stay per (tenant, sub) and shard in Redis Cluster as before.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from customer360.coalesce import Lanes, Waiting

WINDOW_SECONDS = 3600
DEFAULT_LIMIT = 1000
# c360_requests_rejected_total{reason}, one per refused change: over the budget, or no
# Redis to count it in (updates fail closed).
RATE_LIMITED = "rate_limited"
RATE_LIMIT_UNAVAILABLE = "rate_limit_unavailable"

# KEYS[1]: the window; ARGV: now, window, limit, then the new reservation ids.
_RESERVE = """
local now, window, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[1])
local want = #ARGV - 3
local grant = math.max(math.min(want, limit - used), 0)
for i = 4, 3 + grant do redis.call('ZADD', KEYS[1], now, ARGV[i]) end
if grant > 0 then redis.call('EXPIRE', KEYS[1], window) end
local retry = 0
if grant < want then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  retry = window
  if oldest[2] then retry = math.max(math.ceil(tonumber(oldest[2]) + window - now), 1) end
end
return {grant, retry}
"""


@dataclass(frozen=True, slots=True)
class Reservation:
    """Slots granted to the first `len(ids)` of the requested changes (maybe fewer than
    asked); `retry_after` seconds until a slot frees when not all were granted."""

    ids: tuple[str, ...]
    retry_after: int = 0
    unavailable: bool = False


class RateLimiter:
    def __init__(
        self, redis: aioredis.Redis, limit: int = DEFAULT_LIMIT, window: int = WINDOW_SECONDS
    ) -> None:
        self.redis = redis
        self.limit = limit
        self.window = window
        self._reserve = redis.register_script(_RESERVE)
        # (window key, reservation ids) -> [granted, retry after]
        self._calls: Lanes[tuple[str, tuple[str, ...]], list[int]] = Lanes(
            self._reserve_all, in_flight=1
        )
        self._handing_back: set[asyncio.Task[None]] = set()

    @staticmethod
    def key(tenant: str, subject: str) -> str:
        return f"c360:v1:rl:{tenant}:{subject}"

    async def reserve(self, tenant: str, subject: str, n: int) -> Reservation:
        ids = tuple(uuid.uuid4().hex for _ in range(n))
        if n == 0:
            return Reservation(())
        key = self.key(tenant, subject)
        call = self._calls.submit(None, (key, ids))
        try:
            granted, retry = await asyncio.shield(call)
        except (RedisError, OSError):
            return Reservation((), retry_after=5, unavailable=True)
        except asyncio.CancelledError:
            # The call goes to Redis all the same: what it reserves for a request given up on
            # is handed back, or it would count changes that never happened.
            call.add_done_callback(lambda _: self._hand_back(key, ids, call))
            raise
        return Reservation(ids[: int(granted)], retry_after=int(retry))

    def _hand_back(self, key: str, ids: tuple[str, ...], call: asyncio.Future[list[int]]) -> None:
        if call.cancelled() or call.exception() is not None:
            return
        task = asyncio.get_running_loop().create_task(self._zrem(key, ids))
        self._handing_back.add(task)
        task.add_done_callback(self._handing_back.discard)

    async def _zrem(self, key: str, ids: Sequence[str]) -> None:
        try:
            await self.redis.zrem(key, *ids)
        except (RedisError, OSError):
            pass

    async def _reserve_all(self, calls: Waiting[tuple[str, tuple[str, ...]], list[int]]) -> None:
        """One round trip for every waiting call. The script is called by its hash alone (a
        registered script would cost the pipeline a SCRIPT EXISTS round trip each time), and
        loaded only when Redis answers that it does not know it."""
        now = time.time()
        answers = await self._evalsha_all(now, calls)
        unknown = [i for i, a in enumerate(answers) if isinstance(a, NoScriptError)]
        if unknown:  # those did not run: run them again, the others must not
            await self.redis.script_load(_RESERVE)
            again = await self._evalsha_all(now, [calls[i] for i in unknown])
            for i, answer in zip(unknown, again, strict=True):
                answers[i] = answer
        for (_, done), answer in zip(calls, answers, strict=True):
            if isinstance(answer, Exception):
                done.set_exception(answer)
            else:
                done.set_result(answer)

    async def _evalsha_all(
        self, now: float, calls: Waiting[tuple[str, tuple[str, ...]], list[int]]
    ) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for (key, ids), _ in calls:
                pipe.evalsha(self._reserve.sha, 1, key, now, self.window, self.limit, *ids)
            return list(await pipe.execute(raise_on_error=False))

    async def release(self, tenant: str, subject: str, ids: Sequence[str]) -> None:
        """Hand back slots of what was refused or replayed (best effort)."""
        if ids:
            await self._zrem(self.key(tenant, subject), ids)


class Unlimited:
    """No budget at all: for tools and tests that change stages outside any principal's
    hour (a benchmark's loader, the write-path tests). Never wired into the gateway."""

    async def reserve(self, tenant: str, subject: str, n: int) -> Reservation:
        return Reservation(tuple(uuid.uuid4().hex for _ in range(n)))

    async def release(self, tenant: str, subject: str, ids: Sequence[str]) -> None:
        return None
