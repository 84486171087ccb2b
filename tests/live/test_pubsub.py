"""The hub's Redis channels: one per tenant, listened to while somebody here watches it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
import redis.asyncio as aioredis

from customer360.events.hub import Hub
from customer360.events.pubsub import ResilientRedisBackend
from customer360.events.relay import channel


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def hub(redis_url: str) -> AsyncIterator[Hub]:
    async with Hub(ResilientRedisBackend(redis_url)) as hub:
        yield hub


def fresh_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


async def listeners(redis: aioredis.Redis, tenant: str) -> int:
    ((_, n),) = await redis.pubsub_numsub(channel(tenant))
    return int(n)


async def announce(redis: aioredis.Redis, tenant: str, seq: int) -> None:
    await redis.publish(channel(tenant), orjson.dumps({"tenant": tenant, "seq": seq}))


async def test_a_subscriber_hears_what_is_published_as_soon_as_it_is_subscribed(hub, redis) -> None:
    # given a new subscriber of a tenant nobody here watched
    t = fresh_tenant()
    async with hub.subscribe(t) as sub:
        # when a change is announced the moment it is subscribed (what came before, its
        # replay covers: from here on it must hear everything)
        await announce(redis, t, 1)
        # then it hears it
        got = await asyncio.wait_for(sub.queue.get(), 5)
        assert got == {"tenant": t, "seq": 1}


async def test_a_process_listens_only_to_the_tenants_it_has_subscribers_of(hub, redis) -> None:
    watched, other = fresh_tenant(), fresh_tenant()
    assert await listeners(redis, watched) == 0
    # given two subscribers of one tenant
    async with hub.subscribe(watched) as first, hub.subscribe(watched) as second:
        # then the process holds one subscription, to that tenant's channel only
        assert await listeners(redis, watched) == 1
        assert await listeners(redis, other) == 0
        # when both tenants change
        await announce(redis, other, 7)
        await announce(redis, watched, 8)
        # then each subscriber gets its tenant's change, and the other's never reached it
        for sub in (first, second):
            assert await asyncio.wait_for(sub.queue.get(), 5) == {"tenant": watched, "seq": 8}
            assert sub.queue.empty()
    # when the last subscriber leaves, the channel is let go
    for _ in range(100):
        if await listeners(redis, watched) == 0:
            break
        await asyncio.sleep(0.05)
    assert await listeners(redis, watched) == 0


async def test_a_subscriber_that_comes_back_at_once_misses_nothing(hub, redis) -> None:
    t = fresh_tenant()
    for seq in range(20):
        # given the tenant's last subscriber just left (its channel about to be let go)
        async with hub.subscribe(t):
            pass
        # when another subscribes at once and a change is announced
        async with hub.subscribe(t) as sub:
            await announce(redis, t, seq)
            # then it hears it
            assert await asyncio.wait_for(sub.queue.get(), 5) == {"tenant": t, "seq": seq}


async def test_a_change_made_while_the_channel_is_being_confirmed_reaches_the_subscriber(
    settings, api, make_customer, engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    from customer360.app import create_app
    from tests.conftest import Api, run_server
    from tests.live.test_live import MOVE, SUB, auth, settled
    from tests.live.wsclient import connect

    # given a gateway whose Redis confirms a new channel only after a second
    confirm = ResilientRedisBackend.subscribe

    async def slowly(self: ResilientRedisBackend, channel: str) -> None:
        await asyncio.sleep(1.0)
        await confirm(self, channel)

    monkeypatch.setattr(ResilientRedisBackend, "subscribe", slowly)
    cid = await make_customer()
    await settled(engine, api.tenant)
    app = create_app(settings.model_copy(update={"kafka_bootstrap": "off"}))
    async with run_server(app) as url, httpx.AsyncClient(base_url=url) as http:
        mine = Api(http, api.tenant)
        async with connect(url, auth(mine)) as ws:
            # when a subscriber asks, and its customer changes while the channel is confirmed
            await ws.subscribe(SUB, {"cid": str(cid)})
            await asyncio.sleep(0.3)
            moved = await mine.gql(MOVE, {"i": {"customerId": str(cid), "stage": "Onboarded"}})
            # then the change reaches it, replayed, once
            (e,) = await ws.events(1, timeout=5.0)
            assert (
                e["transition"]["id"] == moved["data"]["updateLifecycleStage"]["transition"]["id"]
            )
            with pytest.raises(TimeoutError):
                await ws.events(1, timeout=1.0)
