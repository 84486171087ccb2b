"""Webhooks on real servers: a gateway, PostgreSQL, and an HTTP receiver the test starts."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import hmac
import ipaddress
import json
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from customer360.app import create_app
from customer360.data.crypto import Keyring
from customer360.data.db import make_engine
from customer360.data.keys import TenantKeys
from customer360.data.webhooks import Due
from customer360.devstack import free_port
from customer360.events.runtime import webhook_policy
from customer360.events.signing import TargetPolicy, TargetRefused
from customer360.events.webhooks import WebhookWorker
from customer360.settings import Settings
from customer360.usecases import UseCases
from tests.conftest import DATA_KEY, Api, run_server, scratch_database
from tests.helpers import (
    apply_event,
    change,
    command,
    created_event,
    error_of,
    make_certificates,
    move,
    new_tenant,
)

ADMIN = "ROLE_TENANT_ADMIN"
CREATE = """
mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) {
  secret endpoint { id url stages eventTypes active createdBy } } }
"""
ENDPOINT = """
query($id: ID!) { webhookEndpoint(id: $id) {
  id active disabledAt disabledReason consecutiveFailures previousSecretExpiresAt
  deliveries { id eventId customerId status attempts lastStatusCode lastError deliveredAt } } }
"""
UPDATE = """
mutation($id: ID!, $input: UpdateWebhookEndpointInput!) {
  updateWebhookEndpoint(id: $id, input: $input) { id active disabledAt consecutiveFailures } }
"""
REPLAY = "mutation($id: ID!) { replayWebhookDelivery(id: $id) { id status attempts } }"
ROTATE = "mutation($id: ID!) { rotateWebhookSecret(id: $id) { secret endpoint { id } } }"


# --- an independent reading of the Standard Webhooks specification ----------------------------


def verify_standard_webhook(
    secret: str, headers: dict[str, str], body: bytes, tolerance: int = 300
) -> bool:
    """Written from the spec, not from the gateway's code: whsec_ + base64 key; signed
    content "{webhook-id}.{webhook-timestamp}.{body}"; HMAC-SHA256; header holds
    space-separated "v1,<base64>" signatures, any of which may match."""
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret[len("whsec_") :])
    msg_id = headers["webhook-id"]
    stamp = headers["webhook-timestamp"]
    if abs(time.time() - int(stamp)) > tolerance:
        return False
    signed = msg_id.encode() + b"." + stamp.encode() + b"." + body
    expected = hmac.new(key, signed, hashlib.sha256).digest()
    for candidate in headers["webhook-signature"].split(" "):
        version, _, sig = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(base64.b64decode(sig), expected):
            return True
    return False


# --- a receiver ----------------------------------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def event(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.body)
        return doc


@dataclass
class Receiver:
    url: str
    got: list[Received] = field(default_factory=list)
    # (request) -> status, or a negative number: sleep that many seconds, then 200
    answer: Callable[[Received], int] = lambda r: 200

    def at(self, path: str) -> list[Received]:
        return [r for r in self.got if r.path == path]


@contextlib.asynccontextmanager
async def receiving(port: int | None = None) -> AsyncIterator[Receiver]:
    box = Receiver("")

    async def hook(request: Request) -> Response:
        r = Received(request.url.path, dict(request.headers), await request.body(), time.time())
        box.got.append(r)
        code = box.answer(r)
        if code < 0:
            await asyncio.sleep(-code)
            code = 200
        return Response(b"ok" * 10, status_code=code)

    app = Starlette(routes=[Route("/{name:path}", hook, methods=["POST"])])
    async with run_server(app, port) as url:
        box.url = url
        yield box


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as box:
        yield box


async def until(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.05)


async def register(admin: Api, url: str, **more: Any) -> tuple[str, str]:
    body = await admin.gql(CREATE, {"input": {"url": url, **more}})
    assert "errors" not in body, body
    created = body["data"]["createWebhookEndpoint"]
    return created["endpoint"]["id"], created["secret"]


async def settled(engine: AsyncEngine, eid: str, check: Callable[[list[Any]], bool]) -> None:
    """Wait on the database, not on GraphQL, until the endpoint's deliveries pass `check`:
    the suite's verify mode runs each query twice, and a log changing between the two runs
    would read as a difference between the compiled path and strawberry."""
    deadline = time.monotonic() + 20
    while True:
        async with engine.connect() as c:
            rows = (
                await c.execute(
                    text(
                        "SELECT d.status, d.attempts, e.active FROM webhook_deliveries d "
                        "JOIN webhook_endpoints e ON e.tenant_id = d.tenant_id "
                        "AND e.id = d.endpoint_id WHERE d.endpoint_id = :e ORDER BY d.outbox_id"
                    ),
                    {"e": uuid.UUID(eid)},
                )
            ).all()
        if rows and check(list(rows)):
            return
        assert time.monotonic() < deadline, f"timed out waiting: {rows}"
        await asyncio.sleep(0.05)


async def endpoint(admin: Api, eid: str) -> dict[str, Any]:
    body = await admin.gql(ENDPOINT, {"id": eid})
    assert "errors" not in body, body
    found: dict[str, Any] = body["data"]["webhookEndpoint"]
    return found


# --- the tests -------------------------------------------------------------------------------


async def test_a_change_into_at_risk_reaches_the_endpoint_signed_and_verifiable(
    api: Api, make_customer: Any, receiver: Receiver, engine: AsyncEngine
) -> None:
    admin = api.as_(ADMIN, sub="admin-1")
    # given an endpoint registered for At-Risk only (its secret shown once, at creation)
    eid, secret = await register(admin, f"{receiver.url}/risk", stages=["At-Risk"])
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) >= 24
    cid = await make_customer(email="hidden@example.com", phone="+49 30 1234567", name="Eve Q")
    # when the customer becomes Active (not subscribed) and then At-Risk
    await move(api, cid, "Active")
    await move(api, cid, "At-Risk", "NO_RESPONSE")
    (hit,) = await until(lambda: receiver.at("/risk"))
    # then exactly that change arrives, as the audit CloudEvent, signed per the spec
    assert verify_standard_webhook(secret, hit.headers, hit.body)
    key = bytearray(base64.b64decode(secret[6:]))
    key[0] ^= 1
    wrong = "whsec_" + base64.b64encode(bytes(key)).decode()
    assert not verify_standard_webhook(wrong, hit.headers, hit.body)
    ev = hit.event
    assert ev["type"] == "audit.lifecycle.updated" and ev["specversion"] == "1.0"
    assert ev["id"] == hit.headers["webhook-id"] and ev["tenantid"] == api.tenant
    assert ev["data"]["customer_id"] == str(cid) and ev["data"]["to_stage"] == "At-Risk"
    assert hit.headers["content-type"] == "application/cloudevents+json"
    # and no personal data travels
    for personal in (b"hidden@example.com", b"1234567", b"Eve Q"):
        assert personal not in hit.body
    # and the log says delivered, once, with the receiver's answer
    await settled(engine, eid, lambda rows: rows[0].status == "delivered")
    await asyncio.sleep(0.3)
    assert len(receiver.at("/risk")) == 1
    found = await endpoint(admin, eid)
    (d,) = found["deliveries"]
    assert (d["status"], d["attempts"], d["lastStatusCode"], d["eventId"]) == (
        "DELIVERED",
        1,
        200,
        ev["id"],
    )


async def test_retries_after_500s_and_timeouts_with_growing_waits_then_delivers(
    api: Api, make_customer: Any, receiver: Receiver, engine: AsyncEngine
) -> None:
    admin = api.as_(ADMIN)
    answers = iter([500, -2, 200])  # a 500, an answer slower than the 1 s limit, then OK
    receiver.answer = lambda r: next(answers, 200)
    cid = await make_customer()  # before the endpoint: its creation is not sent
    eid, secret = await register(admin, f"{receiver.url}/flaky")
    await move(api, cid, "Onboarded")
    await until(lambda: len(receiver.at("/flaky")) >= 3)

    await settled(engine, eid, lambda rows: rows[0].status == "delivered")
    d = (await endpoint(admin, eid))["deliveries"][0]
    assert d["attempts"] == 3 and d["lastStatusCode"] == 200
    hits = receiver.at("/flaky")[:3]
    # the same message each time (one webhook-id), each signed afresh
    assert len({h.headers["webhook-id"] for h in hits}) == 1
    assert all(verify_standard_webhook(secret, h.headers, h.body) for h in hits)
    # waits grow per the schedule (0.3 s, then 0.6 s after the 1 s timeout)
    assert hits[1].at - hits[0].at >= 0.3
    assert hits[2].at - hits[1].at >= 0.6 + 1.0 - 0.1


async def test_a_failing_delivery_holds_back_its_customer_only_and_order_is_kept(
    api: Api, make_customer: Any, receiver: Receiver
) -> None:
    admin = api.as_(ADMIN)
    slow, other = await make_customer(), await make_customer()
    failures = {"left": 3}

    def answer(r: Received) -> int:
        if r.event["data"]["customer_id"] == str(slow) and failures["left"] > 0:
            failures["left"] -= 1
            return 503
        return 200

    receiver.answer = answer
    await register(admin, f"{receiver.url}/order")
    # given three changes of one customer, its first delivery failing three times
    await move(api, slow, "Onboarded")
    await move(api, slow, "Active")
    await move(api, slow, "At-Risk", "NO_RESPONSE")
    # and a change of another customer after them
    await move(api, other, "Active")

    def ok_versions(who: uuid.UUID) -> list[int]:
        seen: list[int] = []
        for r in receiver.at("/order"):
            d = r.event["data"]
            if d["customer_id"] == str(who):
                seen.append(d["version"])
        return seen

    await until(lambda: len(ok_versions(slow)) >= 6, timeout=20)
    # then the other customer was not held back by the failures
    first_other = next(
        r.at for r in receiver.at("/order") if r.event["data"]["customer_id"] == str(other)
    )
    slow_hits = [r for r in receiver.at("/order") if r.event["data"]["customer_id"] == str(slow)]
    assert first_other < slow_hits[3].at
    # and the customer's changes arrived in order, the later ones only after the first succeeded
    assert ok_versions(slow) == [2, 2, 2, 2, 3, 4]


async def test_a_long_run_of_failures_disables_the_endpoint_until_the_admin_enables_it(
    api: Api, make_customer: Any, receiver: Receiver, engine: AsyncEngine
) -> None:
    admin = api.as_(ADMIN)
    receiver.answer = lambda r: 500
    cid = await make_customer()
    eid, _ = await register(admin, f"{receiver.url}/down")
    await move(api, cid, "Onboarded")

    await settled(engine, eid, lambda rows: not rows[0].active and rows[0].status == "failed")
    ep = await endpoint(admin, eid)
    # six failures in a row disabled it, with the reason; the delivery ran out of attempts
    assert ep["disabledAt"] and "6 failed deliveries in a row" in ep["disabledReason"]
    (failed,) = ep["deliveries"]
    assert (failed["status"], failed["attempts"], failed["lastError"]) == ("FAILED", 6, "HTTP 500")
    # while disabled, changes make no deliveries
    await move(api, cid, "Active")
    await asyncio.sleep(1.0)
    assert len((await endpoint(admin, eid))["deliveries"]) == 1
    # when the receiver is back and the admin enables the endpoint and replays the delivery
    receiver.answer = lambda r: 200
    body = await admin.gql(UPDATE, {"id": eid, "input": {"active": True}})
    assert body["data"]["updateWebhookEndpoint"] == {
        "id": eid,
        "active": True,
        "disabledAt": None,
        "consecutiveFailures": 0,
    }
    replayed = (await admin.gql(REPLAY, {"id": failed["id"]}))["data"]["replayWebhookDelivery"]
    assert (replayed["status"], replayed["attempts"]) == ("PENDING", 0)
    # then it is delivered, the same message as before
    await until(lambda: [r for r in receiver.at("/down")[6:]])
    await settled(engine, eid, lambda rows: rows[0].status == "delivered")
    assert (await endpoint(admin, eid))["deliveries"][0]["status"] == "DELIVERED"
    assert receiver.at("/down")[-1].headers["webhook-id"] == failed["eventId"]


async def test_a_rotated_secret_signs_with_both_secrets_for_a_while(
    api: Api, make_customer: Any, receiver: Receiver
) -> None:
    admin = api.as_(ADMIN)
    cid = await make_customer()
    eid, old = await register(admin, f"{receiver.url}/rot")
    rotated = (await admin.gql(ROTATE, {"id": eid}))["data"]["rotateWebhookSecret"]
    new = rotated["secret"]
    assert new != old and new.startswith("whsec_")
    assert (await endpoint(admin, eid))["previousSecretExpiresAt"]
    await move(api, cid, "Active")
    (hit,) = await until(lambda: receiver.at("/rot"))
    assert len(hit.headers["webhook-signature"].split(" ")) == 2
    assert verify_standard_webhook(new, hit.headers, hit.body)
    assert verify_standard_webhook(old, hit.headers, hit.body)


async def test_only_the_tenants_admins_manage_webhooks(
    api: Api, make_customer: Any, receiver: Receiver
) -> None:
    admin = api.as_(ADMIN)
    eid, _ = await register(admin, f"{receiver.url}/mine")
    for role in ("ROLE_CUSTOMER_VIEWER", "ROLE_ACCOUNT_MANAGER"):
        caller = api.as_(role)
        body = await caller.gql(CREATE, {"input": {"url": f"{receiver.url}/x"}})
        assert error_of(body)["code"] == "FORBIDDEN"
        assert error_of(await caller.gql(ENDPOINT, {"id": eid}))["code"] == "FORBIDDEN"
    # another tenant's admin sees nothing of it and cannot touch it
    other = api.as_(ADMIN, tenant=new_tenant())
    assert (await other.gql(ENDPOINT, {"id": eid}))["data"]["webhookEndpoint"] is None
    assert error_of(await other.gql(ROTATE, {"id": eid}))["code"] == "NOT_FOUND"
    body = await other.gql(UPDATE, {"id": eid, "input": {"active": False}})
    assert error_of(body)["code"] == "NOT_FOUND"
    assert error_of(await other.gql(REPLAY, {"id": str(uuid.uuid4())}))["code"] == "NOT_FOUND"
    # a super admin may, in the tenant named by X-Tenant-Id
    boss = api.as_("ROLE_SUPER_ADMIN", tenant=new_tenant("home"))
    body = await boss.gql(ENDPOINT, {"id": eid}, boss.headers(**{"X-Tenant-Id": api.tenant}))
    assert body["data"]["webhookEndpoint"]["id"] == eid
    # unknown stages and event types are refused
    body = await admin.gql(CREATE, {"input": {"url": f"{receiver.url}/x", "stages": ["Nope"]}})
    assert error_of(body)["reason"] == "INVALID_STAGE"
    body = await admin.gql(CREATE, {"input": {"url": f"{receiver.url}/x", "eventTypes": ["x.y"]}})
    assert error_of(body)["code"] == "BAD_USER_INPUT"


# --- where webhooks may go -------------------------------------------------------------------

REFUSED = [
    "http://hooks.example.com/x",  # not https
    "https://127.0.0.1/x",
    "https://10.1.2.3/x",
    "https://192.168.0.10/x",
    "https://172.16.5.4/x",
    "https://169.254.169.254/latest/meta-data",  # cloud metadata
    "https://[::1]/x",
    "https://[fe80::1]/x",
    "https://[fd00::1]/x",
    "https://[::ffff:127.0.0.1]/x",
    "https://0.0.0.0/x",
    "https://100.64.0.1/x",
    "https://localhost/x",
    "https://user:pw@hooks.example.com/x",
    "ftp://hooks.example.com/x",
]


@pytest.mark.parametrize("url", REFUSED)
def test_production_refuses_plain_http_and_private_targets(url: str) -> None:
    with pytest.raises(TargetRefused):
        TargetPolicy(dev_targets=False).check_url(url)


def test_production_accepts_public_https_and_ignores_the_dev_setting() -> None:
    TargetPolicy().check_url("https://hooks.example.com:8443/c360?x=1")
    TargetPolicy().check_url("https://93.184.215.14/hook")
    TargetPolicy(dev_targets=True).check_url("http://127.0.0.1:9999/hook")
    # the development setting does nothing in production: the same targets are refused
    prod = Settings(_env_file=None, env="production", webhook_dev_targets=True)  # type: ignore[call-arg]
    dev = Settings(_env_file=None, env="development", webhook_dev_targets=True)  # type: ignore[call-arg]
    webhook_policy(dev).check_url("http://127.0.0.1:9999/hook")
    for url in ("http://127.0.0.1:9999/hook", "https://127.0.0.1/hook"):
        with pytest.raises(TargetRefused):
            webhook_policy(prod).check_url(url)


async def test_the_production_policy_refuses_registration_of_private_targets(
    engine: AsyncEngine, tenant: str
) -> None:
    usecases = UseCases(engine)  # the production policy: no dev targets
    for url in ("http://127.0.0.1:8080/x", "https://10.0.0.8/x"):
        with pytest.raises(TargetRefused):
            await usecases.create_webhook(tenant, "admin", {"url": url, "active": True})
    assert await usecases.webhook_endpoints(tenant) == []


async def test_a_name_resolving_to_a_private_address_is_refused_at_delivery(
    engine: AsyncEngine, receiver: Receiver
) -> None:
    # given a public-looking name that resolves (now) to the receiver on loopback
    async def rebinding(host: str, port: int) -> list[Any]:
        return [ipaddress.ip_address("127.0.0.1")]

    port = receiver.url.rsplit(":", 1)[1]
    due = Due(
        "t",
        uuid.uuid4(),
        uuid.uuid4(),
        "ev-1",
        {"id": "ev-1"},
        0,
        f"https://hooks.example.com:{port}/ssrf",
        ["whsec_" + base64.b64encode(b"k" * 32).decode()],
    )
    worker = WebhookWorker(engine, schedule=[1.0], policy=TargetPolicy(), resolver=rebinding)
    try:
        code, error = await worker.attempt(due)
    finally:
        await worker.close()
    # then nothing is sent, and the log says why
    assert code is None and error is not None and "127.0.0.1 is a loopback address" in error
    assert receiver.got == []
    # while development's setting lets the same address through (plain http, as the tests do)
    dev = WebhookWorker(
        engine, schedule=[1.0], policy=TargetPolicy(dev_targets=True), resolver=rebinding
    )
    try:
        http_due = dataclasses.replace(due, url=f"{receiver.url}/ok")
        assert await dev.attempt(http_due) == (200, None)
    finally:
        await dev.close()


async def test_nothing_is_lost_across_a_gateway_restart_while_the_endpoint_is_down(
    pg_server_url: str, settings: Settings
) -> None:
    # a database and gateways of its own: the session's gateway must not deliver for it
    async with scratch_database(pg_server_url, "c360_hooks") as url:
        engine = make_engine(url, keys=TenantKeys(Keyring.parse(DATA_KEY)))
        own = settings.model_copy(update={"database_url": url, "kafka_bootstrap": "off"})
        try:
            tenant = new_tenant()
            created = created_event(tenant)
            await apply_event(engine, created)
            cid = uuid.UUID(created["data"]["customer_id"])
            # given an endpoint on a port where nothing listens yet
            port = free_port()
            usecases = UseCases(engine, webhook_policy=TargetPolicy(dev_targets=True))
            ep, secret = await usecases.create_webhook(
                tenant, "admin", {"url": f"http://127.0.0.1:{port}/late", "active": True}
            )
            # when a stage change is made and the gateway fails to deliver it, then stops
            async with run_server(create_app(own)):
                await change(engine, command(tenant, cid, "Active"))
                await settled(engine, str(ep.id), lambda rows: rows[0].attempts >= 2)
            await settled(engine, str(ep.id), lambda rows: rows[0].status == "pending")
            # and the endpoint comes back, and a new gateway starts
            async with receiving(port) as box, run_server(create_app(own)):
                (hit,) = await until(lambda: box.at("/late"))
                await settled(engine, str(ep.id), lambda rows: rows[0].status == "delivered")
            # then the change arrived, signed, once
            assert verify_standard_webhook(secret, hit.headers, hit.body)
            assert hit.event["data"]["customer_id"] == str(cid)
            assert hit.event["data"]["to_stage"] == "Active"
            assert len(box.at("/late")) == 1
        finally:
            await engine.dispose()


async def test_https_delivery_connects_to_the_checked_address_and_verifies_the_name(
    engine: AsyncEngine, tmp_path: Any
) -> None:
    """The worker connects to the address it checked, yet TLS still verifies the URL's name
    (SNI and certificate) and the receiver sees the name in Host."""
    certs = make_certificates(tmp_path, host="localhost")
    box = Receiver("")

    async def hook(request: Request) -> Response:
        box.got.append(Received(request.url.path, dict(request.headers), await request.body(), 0))
        return Response(status_code=204)

    app = Starlette(routes=[Route("/{name:path}", hook, methods=["POST"])])
    tls = {"ssl_certfile": str(certs["cert"]), "ssl_keyfile": str(certs["key"])}
    port = free_port()
    resolved: list[str] = []

    async def resolver(host: str, port: int) -> list[Any]:
        resolved.append(host)
        return [ipaddress.ip_address("127.0.0.1")]

    secret = "whsec_" + base64.b64encode(b"s" * 32).decode()
    due = Due("t", uuid.uuid4(), uuid.uuid4(), "ev-tls", {"id": "ev-tls"}, 0, "", [secret])
    trusted = ssl.create_default_context(cafile=str(certs["ca"]))
    worker = WebhookWorker(
        engine,
        schedule=[1.0],
        policy=TargetPolicy(dev_targets=True),  # 127.0.0.1 is where the receiver listens
        resolver=resolver,
        verify=trusted,
    )
    stranger = WebhookWorker(
        engine, schedule=[1.0], policy=TargetPolicy(dev_targets=True), resolver=resolver
    )
    try:
        async with run_server(app, port, **tls):
            url = f"https://localhost:{port}/secure"
            assert await worker.attempt(dataclasses.replace(due, url=url)) == (204, None)
            # a certificate the system does not trust is a failure, nothing delivered
            code, error = await stranger.attempt(dataclasses.replace(due, url=url))
            assert code is None and error is not None and "SSL" in error.upper()
    finally:
        await worker.close()
        await stranger.close()
    assert resolved == ["localhost", "localhost"]
    (hit,) = box.got
    assert hit.headers["host"] == f"localhost:{port}"
    assert verify_standard_webhook(secret, hit.headers, hit.body)


async def test_an_endless_answer_is_read_up_to_the_limit_only(engine: AsyncEngine) -> None:
    """A receiver that answers 200 and then never stops sending: the attempt ends once the
    limit is read, long before its time limit (without the limit it would time out)."""
    sent = {"bytes": 0}

    async def endless(request: Request) -> Response:
        async def chunks() -> AsyncIterator[bytes]:
            while True:
                sent["bytes"] += 65536
                yield b"x" * 65536
                await asyncio.sleep(0)

        return StreamingResponse(chunks(), status_code=200)

    app = Starlette(routes=[Route("/{name:path}", endless, methods=["POST"])])
    secret = "whsec_" + base64.b64encode(b"s" * 32).decode()
    worker = WebhookWorker(
        engine,
        schedule=[1.0],
        timeout=5.0,
        max_response_bytes=100_000,
        policy=TargetPolicy(dev_targets=True),
    )
    try:
        async with run_server(app) as url:
            due = Due(
                "t", uuid.uuid4(), uuid.uuid4(), "ev", {"id": "ev"}, 0, f"{url}/big", [secret]
            )
            started = time.monotonic()
            assert await worker.attempt(due) == (200, None)
            assert time.monotonic() - started < 2.0
    finally:
        await worker.close()
    assert sent["bytes"] < 50 * 65536  # it stopped reading; the sender was cut off
