"""The Redis cache: used, invalidated by the outbox on every process, tenant-safe, optional."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
from sqlalchemy import text

from customer360.app import create_app
from customer360.devstack import free_port
from tests.conftest import Api, run_server
from tests.helpers import apply_event, created_event, event
from tests.live.test_live import settled

CUSTOMER = (
    """query($id: ID!) { customer(id: $id) { name updatedAt lifecycle { stage version } } }"""
)
SUMMARY = "{ lifecycleSummary { total stages { stage count } } }"


async def stage(api: Api, cid: object) -> str:
    body = await api.gql(CUSTOMER, {"id": str(cid)})
    return body["data"]["customer"]["lifecycle"]["stage"]


async def counts(api: Api) -> dict[str, int]:
    body = await api.gql(SUMMARY)
    return {s["stage"]: s["count"] for s in body["data"]["lifecycleSummary"]["stages"]}


async def test_a_read_after_a_write_never_returns_the_old_stage(api, make_customer, engine) -> None:
    cid = await make_customer()
    await settled(engine, api.tenant)
    for target in ["Onboarded", "Active"] * 10:
        await stage(api, cid)  # cache warm
        before = await counts(api)
        assert (await api.patch(cid, {"stage": target})).status_code == 200
        assert await stage(api, cid) == target
        after = await counts(api)
        assert after[target] == before[target] + 1


async def test_reads_are_served_from_the_cache_until_the_outbox_says_otherwise(
    api, make_customer, engine
) -> None:
    cid = await make_customer(name="Cached Name")
    await settled(engine, api.tenant)
    assert (await api.gql(CUSTOMER, {"id": str(cid)}))["data"]["customer"]["name"] == "Cached Name"
    # a change behind the gateway's back (no outbox row) is not seen: the cache answered
    async with engine.begin() as c:
        await c.execute(text("UPDATE customers SET name='Sneaky' WHERE id=:c"), {"c": cid})
    assert (await api.gql(CUSTOMER, {"id": str(cid)}))["data"]["customer"]["name"] == "Cached Name"
    # a real change (an event through the one path) invalidates it everywhere
    await apply_event(
        engine,
        event("customer.updated", api.tenant, {"customer_id": str(cid), "name": "Renamed"}),
    )
    await settled(engine, api.tenant)
    assert (await api.gql(CUSTOMER, {"id": str(cid)}))["data"]["customer"]["name"] == "Renamed"


async def test_another_gateway_process_catches_up_within_a_second(
    settings, api, make_customer, engine
) -> None:
    cid = await make_customer()
    await settled(engine, api.tenant)
    async with (
        # Kafka off: a second consumer in the group would rebalance the session gateway's
        run_server(create_app(settings.model_copy(update={"kafka_bootstrap": "off"}))) as other_url,
        httpx.AsyncClient(base_url=other_url) as other_http,
    ):
        other = Api(other_http, api.tenant)
        assert await stage(other, cid) == "Prospect"  # cached over there
        assert (await api.patch(cid, {"stage": "Active"})).status_code == 200
        t0 = time.monotonic()
        while await stage(other, cid) != "Active":
            assert time.monotonic() - t0 < 1.0
            await asyncio.sleep(0.02)


async def test_the_cache_never_crosses_tenants(api, engine) -> None:
    cid = uuid.uuid4()
    other = api.as_("ROLE_ACCOUNT_MANAGER", tenant=f"b-{api.tenant}")
    await apply_event(engine, created_event(api.tenant, cid, name="Mine"))
    await apply_event(engine, created_event(other.tenant, cid, name="Theirs"))
    for _ in range(2):  # second round from cache
        mine = await api.gql(CUSTOMER, {"id": str(cid)})
        theirs = await other.gql(CUSTOMER, {"id": str(cid)})
        assert mine["data"]["customer"]["name"] == "Mine"
        assert theirs["data"]["customer"]["name"] == "Theirs"


async def test_a_cold_summary_is_computed_once_for_many_concurrent_readers(
    server, api, make_customer, engine
) -> None:
    await make_customer()  # written by the test, not by the server: no local bypass there
    await settled(engine, api.tenant)
    statements: list[str] = []

    def record(statement: str) -> None:
        if "FROM stage_counts" in statement:
            statements.append(statement)

    observers = server.app.state.services.reads.observers
    observers.append(record)
    try:
        results = await asyncio.gather(*(counts(api) for _ in range(20)))
    finally:
        observers.remove(record)
    assert all(r["Prospect"] == 1 for r in results)
    assert len(statements) == 1


async def test_reads_fall_back_to_postgresql_when_redis_is_down(
    settings, api, make_customer
) -> None:
    cid = await make_customer()
    dead = settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{free_port()}/0", "kafka_bootstrap": "off"}
    )
    async with run_server(create_app(dead)) as url, httpx.AsyncClient(base_url=url) as http:
        down = Api(http, api.tenant)
        assert await stage(down, cid) == "Prospect"
        assert (await counts(down))["Prospect"] == 1


async def test_this_process_reads_its_own_write_however_long_the_relay_takes(
    api, make_customer, engine, redis_url, monkeypatch
) -> None:
    import redis.asyncio as aioredis

    import customer360.data.cache as cache_module
    from customer360.data.cache import Cache, customer_key
    from customer360.data.queries import Reads

    cid = await make_customer(name="Before")
    await settled(engine, api.tenant)
    client = aioredis.Redis.from_url(redis_url)
    try:
        reads = Reads(engine, cache=Cache(client))
        assert (await reads.customers_by_id(api.tenant, [cid]))[cid].name == "Before"  # stored
        generation = int(await client.get(f"{customer_key(api.tenant, cid)}:gen"))
        # given a write by this process that the relay has not published yet (simulated: the
        # row changed, the unit of work told the cache which generation it leads to)
        async with engine.begin() as c:
            await c.execute(text("UPDATE customers SET name = 'After' WHERE id = :c"), {"c": cid})
        reads.note_written(api.tenant, {cid: generation + 1_000_000})
        # when a minute passes without the relay catching up
        real = time.monotonic
        monkeypatch.setattr(
            cache_module,
            "time",
            type("Clock", (), {"monotonic": staticmethod(lambda: real() + 60)}),
        )
        # then this process still reads its own write, not the cached old row
        assert (await reads.customers_by_id(api.tenant, [cid]))[cid].name == "After"
        # and once the relay has set that generation, the cache serves it again
        await client.set(f"{customer_key(api.tenant, cid)}:gen", generation + 1_000_000)
        assert (await reads.customers_by_id(api.tenant, [cid]))[cid].name == "After"
        async with engine.begin() as c:
            await c.execute(text("UPDATE customers SET name = 'Behind' WHERE id = :c"), {"c": cid})
        assert (await reads.customers_by_id(api.tenant, [cid]))[cid].name == "After"  # cached
    finally:
        await client.aclose()


async def test_concurrent_reads_of_many_tenants_share_one_round_trip_and_keep_their_answers(
    engine, redis_url
) -> None:
    import redis.asyncio as aioredis

    from customer360.data.cache import Cache
    from customer360.data.queries import Reads

    # given customers of two tenants with the same names, read once so they are cached
    tenants = [f"batch-a-{uuid.uuid4().hex[:6]}", f"batch-b-{uuid.uuid4().hex[:6]}"]
    ids = {t: [uuid.uuid4() for _ in range(5)] for t in tenants}
    for t in tenants:
        for n, cid in enumerate(ids[t]):
            await apply_event(engine, created_event(t, cid, name=f"{t}-{n}"))
        await settled(engine, t)
    client = aioredis.Redis.from_url(redis_url)
    try:
        cache = Cache(client)
        reads = Reads(engine, cache=cache)
        for t in tenants:
            await reads.customers_by_id(t, ids[t])
        calls = 0
        script = cache._get

        async def counted(**kwargs: object) -> object:
            nonlocal calls
            calls += 1
            return await script(**kwargs)

        cache._get = counted  # type: ignore[method-assign]  # counts the real script's calls
        # when ten requests of both tenants read in the same turn of the event loop
        asks = [(t, ids[t][n]) for n in range(5) for t in tenants]
        got = await asyncio.gather(*(reads.customers_by_id(t, [cid]) for t, cid in asks))
        # then Redis was asked once, and each request got its own tenant's customer
        assert calls == 1
        for (t, cid), rows in zip(asks, got, strict=True):
            assert rows[cid].name == f"{t}-{ids[t].index(cid)}"
            assert rows[cid].tenant_id == t
    finally:
        await client.aclose()


async def test_one_call_sets_the_generations_before_it_announces_them(settings) -> None:
    """The relay's call for a drain: every generation set with its expiry, and the messages
    published in their order (one script, so no subscriber hears of a change before its
    generation is set)."""
    import redis.asyncio as aioredis

    from customer360.data.cache import PROFILE_TTL, Invalidator, customer_key, summary_key

    tenant, channel = f"t-{uuid.uuid4().hex[:8]}", f"test:{uuid.uuid4().hex}"
    cids = [str(uuid.uuid4()) for _ in range(3)]
    redis = aioredis.Redis.from_url(settings.redis_url)
    listener = redis.pubsub()
    await listener.subscribe(channel)
    try:
        customers = {(tenant, c): str(100 + i) for i, c in enumerate(cids)}
        messages = [f"m{i}".encode() for i in range(5)]
        # a message for a channel nobody here listens to is published, and not heard here
        sent = [(channel, m) for m in messages[:2]] + [(f"{channel}:other", b"x")]
        sent += [(channel, m) for m in messages[2:]]
        await Invalidator(redis)(customers, {tenant: "102"}, sent)
        heard = []
        deadline = time.monotonic() + 5
        while len(heard) < len(messages) and time.monotonic() < deadline:
            # None for the subscription's own confirmation, as for silence
            got = await listener.get_message(ignore_subscribe_messages=True, timeout=1)
            if got is None:
                continue
            heard.append(got["data"])
        assert heard == messages
        for i, c in enumerate(cids):
            key = f"{customer_key(tenant, c)}:gen"
            assert await redis.get(key) == str(100 + i).encode()
            assert PROFILE_TTL < await redis.ttl(key) <= 2 * PROFILE_TTL
        assert await redis.get(f"{summary_key(tenant)}:gen") == b"102"
        # nothing to announce: the generations alone
        await Invalidator(redis)({(tenant, cids[0]): "103"}, {}, [])
        assert await redis.get(f"{customer_key(tenant, cids[0])}:gen") == b"103"
    finally:
        await listener.aclose()
        await redis.aclose()
