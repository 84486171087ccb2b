"""The hourly update budget per (tenant, sub): atomic in Redis, shared by every process,
counting accepted changes only; replays served past it; fail closed without Redis."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from customer360.app import create_app
from tests.conftest import Api, run_server

MOVE = """mutation($i: UpdateLifecycleStageInput!) {
  updateLifecycleStage(input: $i) { transition { id } } }"""
BULK = """mutation($is: [UpdateLifecycleStageInput!]!) {
  updateLifecycleStages(inputs: $is) {
    succeeded failed results { success error { code retryAfter } } } }"""


@contextlib.asynccontextmanager
async def gateway(settings: Any, limit: int) -> AsyncIterator[httpx.AsyncClient]:
    limited = settings.model_copy(update={"rate_limit": limit, "kafka_bootstrap": "off"})
    async with (
        run_server(create_app(limited)) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        yield http


@pytest.fixture
def user(tenant: str) -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def rate_limited(reason: str = "rate_limited") -> float:
    from customer360.observability import REGISTRY

    labels = {"reason": reason}
    return REGISTRY.get_sample_value("c360_requests_rejected_total", labels) or 0.0


async def test_concurrent_updates_stop_exactly_at_the_limit(settings, tenant, user, make_customer):
    cids = [await make_customer() for _ in range(30)]
    counted = rate_limited()
    async with gateway(settings, 20) as http:
        api = Api(http, tenant, user)
        responses = await asyncio.gather(*(api.patch(c, {"stage": "Active"}) for c in cids))
        codes = sorted(r.status_code for r in responses)
        assert codes == [200] * 20 + [429] * 10
        refused = next(r for r in responses if r.status_code == 429)
        assert int(refused.headers["Retry-After"]) > 0
        assert refused.json()["error"]["code"] == "RATE_LIMITED"
        body = await api.gql(MOVE, {"i": {"customerId": str(cids[0]), "stage": "Onboarded"}})
        extensions = body["errors"][0]["extensions"]
        assert extensions["code"] == "RATE_LIMITED"
        # and GraphQL says when to retry, as REST's Retry-After does
        assert 0 < extensions["retryAfter"] <= 3600
        assert abs(extensions["retryAfter"] - int(refused.headers["Retry-After"])) <= 2
        assert rate_limited() == counted + 11  # every refusal counted, on REST and GraphQL
        # reads go on, and another user of the tenant has a budget of its own
        assert (
            await http.get(f"/api/v1/customers/{cids[0]}/lifecycle", headers=api.headers())
        ).status_code == 200
        other = Api(http, tenant, "someone-else")
        assert (await other.patch(cids[0], {"stage": "Onboarded"})).status_code == 200


async def test_no_ops_count_refusals_do_not(settings, tenant, user, make_customer):
    cid = await make_customer()
    async with gateway(settings, 3) as http:
        api = Api(http, tenant, user)
        for _ in range(4):  # refused by the stage rules: not counted
            assert (await api.patch(cid, {"stage": "Nope"})).status_code == 400
        for _ in range(3):  # no-ops: counted
            assert (await api.patch(cid, {"stage": "Prospect"})).status_code == 200
        assert (await api.patch(cid, {"stage": "Active"})).status_code == 429


async def test_a_replay_is_served_past_the_limit_and_does_not_count(
    settings, tenant, user, make_customer
):
    a, b = await make_customer(), await make_customer()
    async with gateway(settings, 2) as http:
        api = Api(http, tenant, user)
        first = await api.patch(a, {"stage": "Active"}, **{"Idempotency-Key": "k-1"})
        assert first.status_code == 200
        for _ in range(3):  # replays: served, not counted
            again = await api.patch(a, {"stage": "Active"}, **{"Idempotency-Key": "k-1"})
            assert again.status_code == 200 and again.json() == first.json()
        assert (await api.patch(b, {"stage": "Active"})).status_code == 200  # second slot
        assert (await api.patch(b, {"stage": "Onboarded"})).status_code == 429
        replay = await api.patch(a, {"stage": "Active"}, **{"Idempotency-Key": "k-1"})
        assert replay.status_code == 200 and replay.json() == first.json()
        # over the limit, a new key is refused and is not remembered
        fresh = await api.patch(b, {"stage": "Onboarded"}, **{"Idempotency-Key": "k-2"})
        assert fresh.status_code == 429


async def test_bulk_items_count_one_by_one(settings, tenant, user, make_customer):
    cids = [await make_customer() for _ in range(8)]
    async with gateway(settings, 5) as http:
        api = Api(http, tenant, user)
        body = await api.gql(
            BULK, {"is": [{"customerId": str(c), "stage": "Active"} for c in cids]}
        )
        payload = body["data"]["updateLifecycleStages"]
        assert (payload["succeeded"], payload["failed"]) == (5, 3)
        errors = [r["error"] for r in payload["results"] if not r["success"]]
        assert [e["code"] for e in errors] == ["RATE_LIMITED"] * 3
        assert all(0 < e["retryAfter"] <= 3600 for e in errors)
        assert [r["error"] for r in payload["results"] if r["success"]] == [None] * 5


async def test_the_budget_is_shared_by_every_gateway_process(settings, tenant, user, make_customer):
    cids = [await make_customer() for _ in range(20)]
    async with gateway(settings, 15) as a, gateway(settings, 15) as b:
        calls = [
            Api(a if i % 2 else b, tenant, user).patch(c, {"stage": "Active"})
            for i, c in enumerate(cids)
        ]
        codes = sorted(r.status_code for r in await asyncio.gather(*calls))
    assert codes == [200] * 15 + [429] * 5


async def test_the_order_of_refusals(settings, tenant, user, make_customer):
    cid = await make_customer()
    async with gateway(settings, 1) as http:
        api = Api(http, tenant, user)
        assert (await api.patch(cid, {"stage": "Active"})).status_code == 200
        # exhausted: 403 still comes first, 429 before 404
        viewer = Api(http, tenant, user, ("ROLE_CUSTOMER_VIEWER",))
        assert (await viewer.patch(cid, {"stage": "Onboarded"})).status_code == 403
        assert (await api.patch(uuid.uuid4(), {"stage": "Onboarded"})).status_code == 429


async def test_updates_fail_closed_when_redis_is_away(settings, tenant, user, make_customer):
    from customer360.devstack import free_port

    cid = await make_customer()
    dead = settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{free_port()}/0", "kafka_bootstrap": "off"}
    )
    counted = rate_limited(), rate_limited("rate_limit_unavailable")
    async with run_server(create_app(dead)) as url, httpx.AsyncClient(base_url=url) as http:
        api = Api(http, tenant, user)
        refused = await api.patch(cid, {"stage": "Active"})
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "RATE_LIMITED"
        # counted as the outage it is, not as someone over their budget
        assert (rate_limited(), rate_limited("rate_limit_unavailable")) == (
            counted[0],
            counted[1] + 1,
        )
        status = await http.get(f"/api/v1/customers/{cid}/lifecycle", headers=api.headers())
        assert status.status_code == 200 and status.json()["stage"] == "Prospect"


async def test_1500_concurrent_updates_by_one_user_accept_exactly_1000(
    settings, tenant, user, make_customer
):
    cids = [await make_customer() for _ in range(50)]
    async with gateway(settings, 1000) as http:
        api = Api(http, tenant, user)
        in_flight = asyncio.Semaphore(100)  # as many at once as the client's pool carries

        async def one(i: int) -> int:
            async with in_flight:
                # a move to the current stage: an accepted no-op, which counts like a change
                return (await api.patch(cids[i % 50], {"stage": "Prospect"})).status_code

        codes = await asyncio.gather(*(one(i) for i in range(1500)))
    assert codes.count(200) == 1000 and codes.count(429) == 500
