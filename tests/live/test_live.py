"""Live Customer360 on real PostgreSQL, Redis and a Kafka-compatible broker.

A change made anywhere (GraphQL, REST, a Kafka event) reaches subscribed sockets within the
seed spec's 2 seconds; what a socket missed is replayed from history.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text

from tests.conftest import make_token
from tests.helpers import created_event, event, read_topic, renewed_event, unpublished
from tests.live.wsclient import connect

SUB = """subscription($stage: String, $cid: ID, $after: String) {
  lifecycleChanged(stage: $stage, customerId: $cid, after: $after) {
    entered cursor
    customer { id lifecycle { stage version } }
    transition { id customerId fromStage toStage source changedBy reasonCode }
  }
}"""
MOVE = """mutation($i: UpdateLifecycleStageInput!) {
  updateLifecycleStage(input: $i) { transition { id } } }"""


async def settled(engine: Any, tenant: str) -> None:
    """Everything this tenant committed so far has gone out to Redis pub/sub."""

    async def done() -> bool:
        return await unpublished(engine, "redis_published_at", tenant) == 0

    await wait_for(done, 10)


def auth(api: Any, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api.token}", **extra}


@pytest.fixture(scope="session")
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await p.start()
    yield p
    await p.stop()


async def wait_for(probe: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value:
            return value
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def stage_of(engine: Any, cid: uuid.UUID) -> str | None:
    async with engine.connect() as c:
        return (
            await c.execute(text("SELECT stage FROM customers WHERE id=:c"), {"c": cid})
        ).scalar()


@pytest.fixture(scope="session")
async def consuming(server: Any, producer: AIOKafkaProducer, engine: Any) -> None:
    """The gateway's consumer group has joined: a customer.created sent through Kafka landed."""
    ev = created_event("warm-up")
    await producer.send_and_wait("customer.created", json.dumps(ev).encode())
    await wait_for(lambda: stage_of(engine, uuid.UUID(ev["data"]["customer_id"])), 60)


async def test_mutation_rest_and_kafka_changes_reach_a_subscriber_within_2s(
    server, api, make_customer, producer, consuming, engine
) -> None:
    cid = await make_customer()
    await settled(engine, api.tenant)
    async with connect(server.url, auth(api)) as ws:
        await ws.subscribe(SUB, {"cid": str(cid)})
        await asyncio.sleep(0.2)  # the subscription is registered before anything changes
        # GraphQL mutation
        t0 = time.monotonic()
        body = await api.gql(MOVE, {"i": {"customerId": str(cid), "stage": "Onboarded"}})
        (e1,) = await ws.events(1, timeout=2.0)
        assert time.monotonic() - t0 < 2.0
        assert e1["transition"]["id"] == body["data"]["updateLifecycleStage"]["transition"]["id"]
        assert (e1["transition"]["source"], e1["customer"]["lifecycle"]["stage"]) == (
            "UI",
            "Onboarded",
        )
        # REST PATCH
        t0 = time.monotonic()
        assert (await api.patch(cid, {"stage": "Active"})).status_code == 200
        (e2,) = await ws.events(1, timeout=2.0)
        assert time.monotonic() - t0 < 2.0
        assert (e2["transition"]["fromStage"], e2["transition"]["source"]) == ("Onboarded", "API")
        # a Kafka event moving the stage by the tenant's rule (support issue -> At-Risk)
        await api.as_("ROLE_TENANT_ADMIN").gql("""mutation { configureLifecycleStages(input: {
            stages: ["Prospect", "Onboarded", "Active", "At-Risk", "Churned"],
            eventRules: [{eventType: "support.issue.opened", toStage: "At-Risk"}]})
            { version } }""")
        ev = event(
            "support.issue.opened",
            api.tenant,
            {
                "customer_id": str(cid),
                "issue_id": "S-1",
                "opened_at": "2025-07-28T12:00:00Z",
                "priority": "high",
            },
            source="support-desk",
        )
        t0 = time.monotonic()
        await producer.send_and_wait(
            "support.issue.opened", json.dumps(ev).encode(), key=str(cid).encode()
        )
        (e3,) = await ws.events(1, timeout=2.0)
        assert time.monotonic() - t0 < 2.0
        t = e3["transition"]
        assert (t["toStage"], t["source"], t["changedBy"], t["reasonCode"]) == (
            "At-Risk",
            "EVENT_LISTENER",
            "support-desk",
            "support.issue.opened",
        )


async def test_the_live_at_risk_list_sees_entries_and_exits(
    server, api, make_customer, engine
) -> None:
    a, b = await make_customer(), await make_customer()
    await settled(engine, api.tenant)
    async with connect(server.url, auth(api)) as ws:
        await ws.subscribe(SUB, {"stage": "At-Risk"})
        await asyncio.sleep(0.2)
        await api.patch(a, {"stage": "Active"})  # neither into nor out of At-Risk: not sent
        await api.patch(a, {"stage": "At-Risk", "reason_code": "Low Engagement"})
        await api.patch(b, {"stage": "At-Risk", "reason_code": "Payment Failed"})
        await api.patch(a, {"stage": "Active"})
        got = await ws.events(3)
    print(
        [
            (
                e["customer"]["id"][:6],
                e["transition"]["fromStage"],
                e["transition"]["toStage"],
                e["cursor"],
            )
            for e in got
        ],
        str(a)[:6],
        str(b)[:6],
    )
    assert [(e["customer"]["id"], e["entered"]) for e in got] == [
        (str(a), True),
        (str(b), True),
        (str(a), False),
    ]


async def test_a_resuming_client_gets_what_it_missed_then_live_without_gap_or_duplicate(
    server, api, make_customer, engine
) -> None:
    cid = await make_customer()
    await settled(engine, api.tenant)
    async with connect(server.url, auth(api)) as ws:
        await ws.subscribe(SUB, {"cid": str(cid)})
        await asyncio.sleep(0.2)
        await api.patch(cid, {"stage": "Onboarded"})
        (seen,) = await ws.events(1)
    # while disconnected, three changes commit
    for stage in ("Active", "Onboarded", "Active"):
        assert (await api.patch(cid, {"stage": stage})).status_code == 200
    async with connect(server.url, auth(api)) as ws:
        await ws.subscribe(SUB, {"cid": str(cid), "after": seen["cursor"]})
        missed = await ws.events(3)
        await api.patch(cid, {"stage": "Churned", "reason_code": "Budget Cut"})
        (live,) = await ws.events(1)
        with pytest.raises(TimeoutError):
            await ws.receive(timeout=0.5)  # nothing twice
    assert [e["transition"]["toStage"] for e in missed] == ["Active", "Onboarded", "Active"]
    assert live["transition"]["toStage"] == "Churned"


async def test_a_client_that_has_seen_nothing_yet_resumes_from_the_position_it_read(
    server, api, make_customer, engine
) -> None:
    """A list loaded with `lifecyclePosition` read first misses nothing committed between
    its load and its subscription, nor while its first socket was down."""
    cid = await make_customer()
    await settled(engine, api.tenant)
    position = (await api.gql("{ lifecyclePosition }"))["data"]["lifecyclePosition"]
    # committed after the position was read, before any socket is open
    for stage in ("Onboarded", "Active"):
        assert (await api.patch(cid, {"stage": stage})).status_code == 200
    async with connect(server.url, auth(api)) as ws:
        await ws.subscribe(SUB, {"cid": str(cid), "after": position})
        got = await ws.events(2)
        with pytest.raises(TimeoutError):
            await ws.receive(timeout=0.5)  # nothing before the position
    assert [e["transition"]["toStage"] for e in got] == ["Onboarded", "Active"]
    # and the position is the newest change's: read again, it is the last event's cursor
    again = (await api.gql("{ lifecyclePosition }"))["data"]["lifecyclePosition"]
    assert again == got[-1]["cursor"]


async def test_subscriptions_are_tenant_scoped(server, api, make_customer, engine) -> None:
    other = api.as_("ROLE_ACCOUNT_MANAGER", tenant=f"other-{api.tenant}")
    mine = await make_customer()
    theirs = await make_customer(tenant_id=other.tenant)
    await settled(engine, api.tenant)
    async with connect(server.url, auth(api)) as ws:
        await ws.subscribe(SUB)
        await asyncio.sleep(0.2)
        await other.patch(theirs, {"stage": "Active"})
        await api.patch(mine, {"stage": "Active"})
        (e,) = await ws.events(1)
        assert e["customer"]["id"] == str(mine)
        with pytest.raises(TimeoutError):
            await ws.receive(timeout=0.5)


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Basic abc"},
        {"authorization": f"Bearer {make_token(ttl=-120)}"},
    ],
)
async def test_a_bad_or_missing_token_closes_the_socket_with_4403(server, payload) -> None:
    async with connect(server.url, payload, ack=False) as ws:
        assert await ws.closed_with() == 4403


async def test_a_foreign_tenant_header_closes_with_4403_but_a_super_admin_may(
    server, api, make_customer, engine
) -> None:
    async with connect(server.url, auth(api, **{"X-Tenant-Id": "elsewhere"}), ack=False) as ws:
        assert await ws.closed_with() == 4403
    cid = await make_customer()
    await settled(engine, api.tenant)
    admin = api.as_("ROLE_SUPER_ADMIN", tenant="head-office")
    async with connect(server.url, auth(admin, **{"X-Tenant-Id": api.tenant})) as ws:
        await ws.subscribe(SUB, {"cid": str(cid)})
        await asyncio.sleep(0.2)
        await api.patch(cid, {"stage": "Active"})
        (e,) = await ws.events(1)
        assert e["customer"]["id"] == str(cid)


async def test_a_role_without_view_lifecycle_gets_forbidden(server, api) -> None:
    nobody = api.as_("ROLE_UNKNOWN")
    async with connect(server.url, auth(nobody)) as ws:
        await ws.subscribe(SUB)
        msg = await ws.receive()
    assert msg["type"] in ("error", "next")
    errors = msg["payload"] if msg["type"] == "error" else msg["payload"]["errors"]
    assert errors[0]["extensions"]["code"] == "FORBIDDEN"


async def test_a_browser_origin_not_allowed_is_refused_at_the_handshake(server, api) -> None:
    import websockets

    with pytest.raises(websockets.InvalidStatus) as refused:
        async with connect(server.url, auth(api), origin="https://evil.example"):
            pass
    assert refused.value.response.status_code == 403
    # the service's own origin is fine
    async with connect(server.url, auth(api), origin=server.url):
        pass


async def test_the_socket_closes_when_its_token_expires(server, api) -> None:
    short = make_token(api.sub, api.tenant, api.roles, ttl=2)
    async with connect(server.url, {"Authorization": f"Bearer {short}"}) as ws:
        await ws.subscribe(SUB)
        t0 = time.monotonic()
        assert await ws.closed_with(timeout=10) == 4403
        assert time.monotonic() - t0 < 5


async def test_kafka_events_duplicates_and_bad_ones(
    server, api, make_customer, producer, consuming, engine, kafka_bootstrap
) -> None:
    cid = await make_customer()
    renewal = renewed_event(api.tenant, cid, renewed_at="2025-07-28T12:00:00Z", source="billing")
    no_tenant = event("contract.renewed", None, {"customer_id": str(cid)})
    unknown = event(
        "contract.renewed",
        api.tenant,
        {
            "customer_id": str(uuid.uuid4()),
            "contract_id": "K",
            "renewed_at": "2025-07-28T12:00:00Z",
        },
    )
    for value in (renewal, renewal, no_tenant, unknown):
        await producer.send_and_wait("contract.renewed", json.dumps(value).encode())
    await producer.send_and_wait("contract.renewed", b"\x00garbage")

    async def renewals() -> int:
        async with engine.connect() as c:
            return (
                await c.execute(
                    text(
                        "SELECT contract_renewal_count FROM customer_metrics WHERE customer_id=:c"
                    ),
                    {"c": cid},
                )
            ).scalar()

    await wait_for(renewals, 20)

    # the DLQ holds the three bad ones, unchanged, with their origin in headers
    def is_mine(r: Any) -> bool:
        return (
            r.value == b"\x00garbage"
            or str(cid).encode() in r.value
            or unknown["id"].encode() in r.value
        )

    records = await read_topic(
        kafka_bootstrap, "contract.renewed.dlq", lambda rs: sum(map(is_mine, rs)) >= 3
    )
    mine = [r for r in records if is_mine(r)]
    assert len(mine) == 3
    for r in mine:
        h = dict(r.headers)
        assert h["dlq.topic"] == b"contract.renewed" and h["dlq.error"]
        assert h["dlq.offset"].decode().isdigit() and h["dlq.partition"].decode().isdigit()
    assert await renewals() == 1  # the duplicate changed nothing
    assert await stage_of(engine, cid) == "Active"


async def test_every_committed_change_reaches_the_audit_topic_in_order(
    server, api, make_customer, kafka_bootstrap
) -> None:
    cid = await make_customer()
    for stage in ("Onboarded", "Active", "Onboarded", "Active"):
        assert (await api.patch(cid, {"stage": stage})).status_code == 200
    key = str(cid).encode()
    records = await read_topic(
        kafka_bootstrap,
        "audit.lifecycle.updated",
        lambda rs: sum(r.key == key for r in rs) >= 5,
    )
    docs = [json.loads(r.value) for r in records if r.key == key]
    assert all(d["specversion"] == "1.0" and d["tenantid"] == api.tenant for d in docs)
    versions = [d["data"]["version"] for d in docs]
    assert versions == [1, 2, 3, 4, 5]  # creation, then four moves, one partition, in order


async def test_identical_subscriptions_share_one_execution(
    server, api, make_customer, engine, http
) -> None:
    def gauge(text_: str, name: str) -> float:
        line = next(ln for ln in text_.splitlines() if ln.startswith(name + " "))
        return float(line.split()[1])

    cid = await make_customer()
    await settled(engine, api.tenant)
    async with contextlib.AsyncExitStack() as stack:
        sockets = [
            await stack.enter_async_context(connect(server.url, auth(api))) for _ in range(3)
        ]
        for ws in sockets:
            await ws.subscribe(SUB, {"stage": "Active"})
        await asyncio.sleep(0.3)
        metrics = (await http.get("/metrics")).text
        assert gauge(metrics, "c360_subscriptions_active") == 3
        assert gauge(metrics, "c360_subscription_groups") == 1
        await api.patch(cid, {"stage": "Active"})
        got = [(await ws.events(1))[0] for ws in sockets]
    assert len({e["transition"]["id"] for e in got}) == 1
    assert all(e["entered"] for e in got)
    await asyncio.sleep(0.2)
    metrics = (await http.get("/metrics")).text
    assert gauge(metrics, "c360_subscriptions_active") == 0
    assert gauge(metrics, "c360_subscription_groups") == 0


async def test_an_open_socket_does_not_keep_its_parsed_handshake(
    server, api, make_customer, engine
) -> None:
    # The session's uvicorn runs in this process, so its connection objects can be looked at.
    import gc

    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

    def open_protocols() -> list[WebSocketsSansIOProtocol]:
        return [
            o
            for o in gc.get_objects()
            # type(), not isinstance(): the heap holds dead weak proxies that raise on access
            if type(o) is WebSocketsSansIOProtocol and o.handshake_complete and not o.close_sent
        ]

    cid = await make_customer()
    await settled(engine, api.tenant)
    async with connect(server.url, auth(api)) as ws:
        await ws.subscribe(SUB)
        await asyncio.sleep(0.2)
        protocols = open_protocols()
        # given at least this socket open, its parsed request and response (with their header
        # multidicts, about 4.7 KB) are gone, while the socket goes on working
        assert protocols
        assert all(p.request is None and p.response is None for p in protocols)
        await api.patch(cid, {"stage": "Active"})
        (e,) = await ws.events(1)
        assert e["customer"]["id"] == str(cid)


async def test_a_change_to_a_customer_that_no_longer_exists_is_not_found(
    server, api, redis_url
) -> None:
    import redis.asyncio as aioredis

    from customer360.events.relay import channel

    async with connect(server.url, auth(api)) as ws:
        await ws.subscribe(SUB)
        await asyncio.sleep(0.2)
        # when a change reaches the subscription for a customer no read can find any more
        gone = str(uuid.uuid4())
        data = {
            "transition_id": str(uuid.uuid4()),
            "customer_id": gone,
            "from_stage": "Prospect",
            "to_stage": "Active",
            "changed_at": "2026-01-01T00:00:00+00:00",
            "changed_by": "user-1",
            "reason_code": None,
            "source": "UI",
            "version": 2,
        }
        message = {"tenant": api.tenant, "seq": 2**40, "event": {"data": data}}
        client = aioredis.from_url(redis_url)
        try:
            await client.publish(channel(api.tenant), json.dumps(message))
        finally:
            await client.aclose()
        # then its frame says NOT_FOUND, as a mutation's payload would
        frame = await ws.receive()
        assert frame["type"] == "next", frame
        (error,) = frame["payload"]["errors"]
        assert error["extensions"]["code"] == "NOT_FOUND"
