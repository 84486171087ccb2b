"""auth.ratelimit.RateLimiter on a real Redis: concurrent reservations share a round trip
(one pipeline of scripts) and stay exact per window; a Redis that forgot the script, or is
not there, is handled. tests/api/test_rate_limit.py checks the budget through the API."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from customer360.auth.ratelimit import RateLimiter


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def test_concurrent_reservations_share_round_trips_and_stop_exactly_at_the_limit(
    redis: aioredis.Redis,
) -> None:
    # given a budget of 3 per (tenant, sub)
    limiter = RateLimiter(redis, limit=3)
    tenant, a, b = f"t-{uuid.uuid4().hex[:6]}", "user-a", "user-b"
    await limiter.reserve(tenant, "warm-up", 1)  # the script known to Redis
    pipelines = 0
    made = redis.pipeline

    def counted(*args, **kw):  # type: ignore[no-untyped-def]
        nonlocal pipelines
        pipelines += 1
        return made(*args, **kw)

    redis.pipeline = counted  # type: ignore[method-assign]
    # when seven requests of two users ask at once
    asks = [limiter.reserve(tenant, a, 1) for _ in range(5)] + [
        limiter.reserve(tenant, b, 1) for _ in range(2)
    ]
    got = await asyncio.gather(*asks)
    # then user a gets exactly 3 slots, each refusal says when one frees, user b gets both
    granted_a = [len(r.ids) for r in got[:5]]
    assert sorted(granted_a) == [0, 0, 1, 1, 1]
    assert all(r.retry_after > 0 for r in got[:5] if not r.ids)
    assert [len(r.ids) for r in got[5:]] == [1, 1]
    assert await redis.zcard(RateLimiter.key(tenant, a)) == 3
    # and all seven went to Redis in one round trip
    assert pipelines == 1


async def test_a_redis_that_forgot_the_script_reserves_each_slot_once(
    redis: aioredis.Redis,
) -> None:
    limiter = RateLimiter(redis, limit=10)
    tenant = f"t-{uuid.uuid4().hex[:6]}"
    await limiter.reserve(tenant, "u", 1)
    await redis.script_flush()
    got = await asyncio.gather(*(limiter.reserve(tenant, "u", 2) for _ in range(3)))
    assert [len(r.ids) for r in got] == [2, 2, 2]
    assert await redis.zcard(RateLimiter.key(tenant, "u")) == 7


async def test_without_redis_updates_are_refused_and_say_so() -> None:
    gone = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
    try:
        got = await asyncio.gather(*(RateLimiter(gone).reserve("t", "u", 1) for _ in range(3)))
    finally:
        await gone.aclose()
    assert all(r.ids == () and r.unavailable and r.retry_after == 5 for r in got)


async def test_a_reservation_given_up_on_hands_its_slots_back(redis: aioredis.Redis) -> None:
    # given a reservation whose caller gives up while its call is on the way to Redis
    limiter = RateLimiter(redis, limit=10)
    tenant = f"t-{uuid.uuid4().hex[:6]}"
    asking = asyncio.create_task(limiter.reserve(tenant, "u", 2))
    await asyncio.sleep(0)
    asking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asking
    # when Redis has answered it (a later call waits behind it)
    await limiter.reserve(tenant, "later", 1)
    # then the two slots it reserved are handed back: no change was made with them
    key = RateLimiter.key(tenant, "u")
    for _ in range(100):
        if await redis.zcard(key) == 0:
            break
        await asyncio.sleep(0.01)
    assert await redis.zcard(key) == 0
