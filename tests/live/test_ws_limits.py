"""WebSocket abuse limits on a real gateway over real sockets: operations per socket, sockets
per principal, the connection_init deadline, and 4403 on the legacy protocol too."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
import websockets
from websockets.asyncio.client import ClientConnection

from customer360.app import create_app
from customer360.auth.principal import Principal
from customer360.auth.sockets import SocketSlots
from customer360.devstack import free_port
from customer360.settings import Settings
from customer360.tls import server_options
from tests.conftest import make_token, run_server
from tests.live.test_live import SUB
from tests.live.wsclient import Socket, connect, ws_url

LIMIT = 3
INIT_TIMEOUT = 1.0
LEGACY = "graphql-ws"
TRANSPORT = "graphql-transport-ws"


@pytest.fixture(scope="module")
async def gateway(settings: Settings) -> AsyncIterator[str]:
    """A gateway of its own with small limits (and the legacy protocol on)."""
    limited = settings.model_copy(
        update={
            "kafka_bootstrap": "off",  # not a member of the session gateway's consumer group
            "ws_legacy": True,
            "ws_max_subscriptions": LIMIT,
            "ws_max_sockets_per_principal": LIMIT,
            "ws_init_timeout_seconds": INIT_TIMEOUT,
        }
    )
    # served as `c360 serve` serves (message size limit included)
    async with run_server(create_app(limited), **server_options(limited)) as url:
        yield url


def bearer(tenant: str, sub: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(sub, tenant)}"}


def someone() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


async def rejected(url: str, reason: str) -> float:
    async with httpx.AsyncClient(base_url=url) as http:
        text = (await http.get("/metrics")).text
    line = f'c360_requests_rejected_total{{reason="{reason}"}} '
    return next((float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(line)), 0.0)


@contextlib.asynccontextmanager
async def raw(url: str, protocol: str) -> AsyncIterator[ClientConnection]:
    async with websockets.connect(ws_url(url), subprotocols=[protocol], compression=None) as ws:
        yield ws


async def closed(ws: ClientConnection, timeout: float = 5.0) -> tuple[int | None, str]:
    """The close code and reason the server sent, skipping any frames before it."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except websockets.ConnectionClosed as exc:
        return (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (None, "")


async def legacy_frame(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    """The next graphql-ws frame other than keep-alives."""
    while True:
        msg: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
        if msg["type"] != "ka":
            return msg


async def acked(ws: ClientConnection) -> bool:
    """Whether connection_init was acknowledged (rather than the socket closed)."""
    try:
        return bool(json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "connection_ack")
    except websockets.ConnectionClosed:
        return False


# --- operations per socket ------------------------------------------------------------------


def limit_error(payload: dict[str, Any]) -> bool:
    return payload.get("extensions") == {
        "code": "BAD_USER_INPUT",
        "reason": "TOO_MANY_SUBSCRIPTIONS",
    }


async def test_one_operation_over_the_limit_is_refused_alone_and_the_socket_stays_open(
    gateway, api
) -> None:
    before = await rejected(gateway, "ws_too_many_subscriptions")
    async with connect(gateway, bearer(api.tenant, someone())) as ws:
        for _ in range(LIMIT):
            await ws.subscribe(SUB)
        over = await ws.subscribe(SUB)
        msg = await ws.receive()
        assert (msg["type"], msg["id"]) == ("error", over), msg
        assert limit_error(msg["payload"][0]), msg
        # one completes: the next is accepted, and counted (the one after is refused again)
        await ws.ws.send(json.dumps({"id": "1", "type": "complete"}))
        await ws.subscribe(SUB)
        refused = await ws.subscribe(SUB)
        msg = await ws.receive()
        assert (msg["type"], msg["id"]) == ("error", refused), msg
        # the socket still serves: with room made again, an operation runs to its end
        await ws.ws.send(json.dumps({"id": "2", "type": "complete"}))
        query = await ws.subscribe("{ __typename }")
        got = [await ws.receive() for _ in range(2)]
    assert [(m["type"], m["id"]) for m in got] == [("next", query), ("complete", query)], got
    assert got[0]["payload"] == {"data": {"__typename": "Query"}}
    assert await rejected(gateway, "ws_too_many_subscriptions") - before == 2


async def test_the_operation_limit_holds_on_the_legacy_protocol_too(gateway, api) -> None:
    async with raw(gateway, LEGACY) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": bearer(api.tenant, "l")}))
        assert (await legacy_frame(ws))["type"] == "connection_ack"
        start = {"type": "start", "payload": {"query": SUB, "variables": {}}}
        for n in range(1, LIMIT + 2):
            await ws.send(json.dumps({**start, "id": str(n)}))
        msg = await legacy_frame(ws)
        assert (msg["type"], msg["id"]) == ("error", str(LIMIT + 1)), msg
        assert limit_error(msg["payload"]), msg
        await ws.send(json.dumps({"type": "stop", "id": "1"}))
        await ws.send(json.dumps({**start, "id": "a"}))
        await ws.send(json.dumps({**start, "id": "b"}))
        seen = [await legacy_frame(ws) for _ in range(2)]
    assert [(m["type"], m["id"]) for m in seen] == [("complete", "1"), ("error", "b")], seen


# --- sockets per principal ------------------------------------------------------------------


async def test_sockets_over_the_principals_budget_close_with_4429_and_closing_frees_a_slot(
    gateway, api
) -> None:
    me = bearer(api.tenant, someone())
    before = await rejected(gateway, "ws_too_many_sockets")
    refusals = 0

    async def refused() -> None:
        nonlocal refusals
        async with connect(gateway, me, ack=False) as ws:
            code, reason = await closed(ws.ws)
        assert (code, reason) == (4429, "Too many open sockets")
        refusals += 1

    async def admitted(stack: contextlib.AsyncExitStack) -> Socket:
        """A new socket once the server has seen an earlier one go (that is asynchronous)."""
        nonlocal refusals
        deadline = time.monotonic() + 5
        while True:
            ws = await stack.enter_async_context(connect(gateway, me, ack=False))
            if await acked(ws.ws):
                return ws
            refusals += 1
            assert time.monotonic() < deadline, "the slot was never freed"
            await asyncio.sleep(0.05)

    async with contextlib.AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(connect(gateway, me)) for _ in range(LIMIT)]
        await refused()
        # another person of the same tenant has a budget of their own
        async with connect(gateway, bearer(api.tenant, someone())):
            pass
        # a clean close frees its slot
        await sockets[0].ws.close()
        sockets[0] = await admitted(stack)
        await refused()
        # so does a client that vanishes without a close frame
        assert sockets[1].ws.transport is not None
        sockets[1].ws.transport.abort()
        sockets[1] = await admitted(stack)
        await refused()
    assert await rejected(gateway, "ws_too_many_sockets") - before == refusals


async def test_a_second_legacy_init_is_refused_and_takes_no_extra_slot(gateway, api) -> None:
    me = bearer(api.tenant, someone())
    async with raw(gateway, LEGACY) as ws:
        init = json.dumps({"type": "connection_init", "payload": me})
        await ws.send(init)
        assert (await legacy_frame(ws))["type"] == "connection_ack"
        await ws.send(init)
        assert (await closed(ws))[0] == 4429
    # the budget is whole again once that socket is gone
    deadline = time.monotonic() + 5
    while True:
        async with contextlib.AsyncExitStack() as stack:
            socks = [
                await stack.enter_async_context(connect(gateway, me, ack=False))
                for _ in range(LIMIT)
            ]
            answers = [await acked(s.ws) for s in socks]
        if all(answers):
            return
        assert time.monotonic() < deadline, answers
        await asyncio.sleep(0.05)


# --- connection_init deadline ---------------------------------------------------------------


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_a_socket_that_never_sends_connection_init_is_closed_with_4408(
    gateway, protocol
) -> None:
    before = await rejected(gateway, "ws_init_timeout")
    async with raw(gateway, protocol) as ws:
        t0 = time.monotonic()
        assert (await closed(ws))[0] == 4408
        assert time.monotonic() - t0 < INIT_TIMEOUT + 1
    assert await rejected(gateway, "ws_init_timeout") - before == 1


async def test_the_default_connection_init_deadline_is_3_seconds(server) -> None:
    assert Settings(_env_file=None).ws_init_timeout_seconds == 3  # type: ignore[call-arg]
    async with raw(server.url, TRANSPORT) as ws:
        t0 = time.monotonic()
        assert (await closed(ws, timeout=8))[0] == 4408
        assert 2.5 < time.monotonic() - t0 < 4.5


# --- legacy protocol tokens -----------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Basic abc"},
        {"authorization": f"Bearer {make_token(ttl=-120)}"},
    ],
)
async def test_a_bad_or_missing_token_closes_a_legacy_socket_with_4403(gateway, payload) -> None:
    async with raw(gateway, LEGACY) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        assert (await legacy_frame(ws))["type"] == "connection_error"
        assert (await closed(ws))[0] == 4403


async def test_a_good_token_is_acknowledged_on_the_legacy_protocol(gateway, api) -> None:
    async with raw(gateway, LEGACY) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": bearer(api.tenant, "g")}))
        assert (await legacy_frame(ws))["type"] == "connection_ack"


async def test_the_socket_budget_is_shared_by_every_gateway_process(gateway, settings, api):
    # given a second gateway process with the same budget, on the same Redis
    second = settings.model_copy(
        update={"kafka_bootstrap": "off", "ws_max_sockets_per_principal": LIMIT}
    )
    me = bearer(api.tenant, someone())
    async with run_server(create_app(second)) as other, contextlib.AsyncExitStack() as stack:
        # when one person's sockets are spread over both processes up to the budget
        here = [await stack.enter_async_context(connect(gateway, me)) for _ in range(LIMIT - 1)]
        await stack.enter_async_context(connect(other, me))
        # then one more is refused on either
        for url in (gateway, other):
            async with connect(url, me, ack=False) as ws:
                assert (await closed(ws.ws))[0] == 4429
        # and a socket closed on one process frees a place on the other
        await here[0].ws.close()
        deadline = time.monotonic() + 5
        while True:
            ws = await stack.enter_async_context(connect(other, me, ack=False))
            if await acked(ws.ws):
                break
            assert time.monotonic() < deadline, "the place was never handed back"
            await asyncio.sleep(0.05)


def principal(tenant: str, sub: str) -> Principal:
    return Principal(sub, tenant, ("ROLE_VIEWER",), frozenset(), tenant, 2**31)


async def test_a_dead_processs_sockets_stop_counting_within_one_lease(redis_url, tenant):
    redis = aioredis.Redis.from_url(redis_url)
    me = principal(tenant, someone())
    dead, alive, other = (SocketSlots(2, lease_seconds=1.0) for _ in range(3))
    try:
        # given a process holding the whole budget, which then dies (renews and frees nothing)
        assert None not in [await dead.acquire(me, redis) for _ in range(2)]
        assert dead._renewer is not None
        dead._renewer.cancel()
        # then another process is refused while the leases run
        assert await alive.acquire(me, redis) is None
        # and admitted once they ran out
        await asyncio.sleep(1.5)
        assert await alive.acquire(me, redis) is not None
        # while a live process's lease is renewed and keeps counting past its first term
        await asyncio.sleep(1.5)
        assert await other.acquire(me, redis) is not None
        assert await other.acquire(me, redis) is None
        # and a clean shutdown hands its leases back at once
        await alive.close()
        assert await other.acquire(me, redis) is not None
    finally:
        for slots in (dead, alive, other):
            await slots.close()
        await redis.aclose()


async def test_without_redis_the_budget_holds_per_process(tenant):
    # given a Redis that does not answer
    redis = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")
    slots, me = SocketSlots(2), principal(tenant, someone())
    try:
        # then this process still counts its own sockets
        held = [await slots.acquire(me, redis) for _ in range(2)]
        assert None not in held
        assert await slots.acquire(me, redis) is None
        held[0].release()  # type: ignore[union-attr]
        assert await slots.acquire(me, redis) is not None
    finally:
        await redis.aclose()


async def test_a_websocket_message_over_1_mib_closes_the_socket_with_1009(
    gateway: str, tenant: str
) -> None:
    url = gateway
    before = await rejected(url, "ws_message_too_large")
    token = {"Authorization": f"Bearer {make_token('u-1', tenant)}"}
    query = "subscription { lifecycleChanged { cursor } }"
    # given an open, acknowledged socket
    async with raw(url, "graphql-transport-ws") as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": token}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        # a message just under the limit is read as any other
        padded = query + " " * (1024 * 1024 - 200)
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": padded}}))
        await asyncio.sleep(0.3)
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 5))["type"] == "pong"
        # when a 2 MiB subscribe message arrives (a short document padded with spaces)
        padded = query + " " * (2 * 1024 * 1024)
        await ws.send(json.dumps({"id": "2", "type": "subscribe", "payload": {"query": padded}}))
        # then the server closes with 1009 and counts the refusal
        code, _ = await closed(ws)
    assert code == 1009
    assert await rejected(url, "ws_message_too_large") == before + 1
