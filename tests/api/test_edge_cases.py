"""Edge cases found in review: races, forged input, ordering, production hardening."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid

import httpx
import pytest

from customer360.app import create_app
from customer360.usecases import EventRejected
from tests.conftest import run_server
from tests.helpers import apply_event, created_event


async def test_one_idempotency_key_on_two_customers_at_once_applies_only_one(
    api, make_customer
) -> None:
    a, b = await make_customer(), await make_customer()
    key = uuid.uuid4().hex
    ra, rb = await asyncio.gather(
        api.patch(a, {"stage": "Active"}, **{"Idempotency-Key": key}),
        api.patch(b, {"stage": "Active"}, **{"Idempotency-Key": key}),
    )
    assert sorted([ra.status_code, rb.status_code]) == [200, 422]
    loser = ra if ra.status_code == 422 else rb
    assert loser.json()["error"]["details"]["reason"] == "IDEMPOTENCY_KEY_REUSED"


async def test_two_creations_of_one_customer_at_once_make_one_lifecycle(engine, tenant) -> None:
    cid = uuid.uuid4()
    events = [created_event(tenant, cid, name=f"Name {i}") for i in range(4)]
    await asyncio.gather(*(apply_event(engine, e) for e in events))
    from sqlalchemy import text

    async with engine.connect() as c:
        n = (
            await c.execute(
                text("SELECT count(*) FROM lifecycle_history_all WHERE customer_id=:c"), {"c": cid}
            )
        ).scalar()
    assert n == 1


async def test_an_event_without_time_is_rejected(engine, tenant) -> None:
    ev = created_event(tenant)
    del ev["time"]
    with pytest.raises(EventRejected, match="time"):
        await apply_event(engine, ev)


async def test_oversized_event_attributes_are_rejected(engine, tenant) -> None:
    ev = created_event(tenant)
    ev["id"] = "x" * 20_000
    with pytest.raises(EventRejected, match="id"):
        await apply_event(engine, ev)


def _forge(cursor: str, keys: list) -> str:  # type: ignore[type-arg]
    raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    doc = json.dumps([raw[0], keys]).encode()
    return base64.urlsafe_b64encode(doc).decode().rstrip("=")


async def test_forged_cursors_with_the_right_scope_are_invalid_cursor(api, make_customer) -> None:
    cid = await make_customer()
    await make_customer()
    await api.patch(cid, {"stage": "Active"})
    page = await api.gql("{ customers(first: 1) { pageInfo { endCursor } } }")
    cursor = page["data"]["customers"]["pageInfo"]["endCursor"]
    for keys in (["2025-01-01T00:00:00+00:00", 5], [1, "x"], ["not a time", str(cid)]):
        body = await api.gql(
            "query($a: String) { customers(after: $a) { totalCount } }", {"a": _forge(cursor, keys)}
        )
        assert body["errors"][0]["extensions"]["reason"] == "INVALID_CURSOR", keys
    hist = await api.gql(
        "query($id: ID!) { customer(id: $id) { lifecycleHistory(first: 1) "
        "{ pageInfo { endCursor } } } }",
        {"id": str(cid)},
    )
    hcursor = hist["data"]["customer"]["lifecycleHistory"]["pageInfo"]["endCursor"]
    body = await api.gql(
        "query($id: ID!, $a: String) { customer(id: $id) { "
        "lifecycleHistory(after: $a) { totalCount } } }",
        {"id": str(cid), "a": _forge(hcursor, [2**40])},
    )
    assert body["errors"][0]["extensions"]["reason"] == "INVALID_CURSOR"


CONFIG = """mutation($v: Int) { configureLifecycleStages(input: {stages: ["A", "A"],
  expectedVersion: $v}) { version } }"""


async def test_configure_checks_permission_then_version_then_content(api) -> None:
    viewer = await api.as_("ROLE_CUSTOMER_VIEWER").gql(CONFIG, {"v": None})
    assert viewer["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    stale = await api.as_("ROLE_TENANT_ADMIN").gql(CONFIG, {"v": 7})
    assert stale["errors"][0]["extensions"]["code"] == "CONFLICT"
    bad = await api.as_("ROLE_TENANT_ADMIN").gql(CONFIG, {"v": 0})
    assert bad["errors"][0]["extensions"]["reason"] == "INVALID_CONFIG"


async def test_overlong_stage_is_bad_input_before_forbidden(api, make_customer) -> None:
    cid = await make_customer()
    body = await api.as_("ROLE_CUSTOMER_VIEWER").gql(
        "mutation($i: UpdateLifecycleStageInput!) { updateLifecycleStage(input: $i) { success } }",
        {"i": {"customerId": str(cid), "stage": "x" * 300}},
    )
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    resp = await api.as_("ROLE_CUSTOMER_VIEWER").patch(cid, {"stage": "x" * 300})
    assert resp.status_code == 400


async def test_production_hides_field_suggestions(settings) -> None:
    prod = settings.model_copy(
        update={
            "env": "production",
            "tls_proxy": ["127.0.0.1"],
            "jwt_allow_hs256": True,
            "kafka_bootstrap": "off",
            "data_key": "k1:" + "A" * 43 + "=",
        }
    )
    from tests.conftest import make_token

    async with run_server(create_app(prod)) as url, httpx.AsyncClient(base_url=url) as c:
        resp = await c.post(
            "/graphql",
            json={"query": '{ custmer(id: "x") { id } }'},
            headers={"Authorization": f"Bearer {make_token()}"},
        )
        intro = await c.post(
            "/graphql",
            json={"query": "{ __schema { types { name } } }"},
            headers={"Authorization": f"Bearer {make_token()}"},
        )
        page = await c.get("/graphql", headers={"Accept": "text/html"})
    message = resp.json()["errors"][0]["message"]
    assert "custmer" in message and "Did you mean" not in message
    assert "errors" in intro.json()
    assert page.status_code == 404


async def test_unknown_http_methods_share_one_metrics_label(http) -> None:
    await http.request("PROPFIND", "/healthz")
    text = (await http.get("/metrics")).text
    assert "PROPFIND" not in text
    assert 'method="other"' in text
