"""Tokens, tenants and roles over HTTP, CONTRACT section 2, on GraphQL and REST alike."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import websockets

from tests.conftest import AUDIENCE, ISSUER, SECRET, make_token
from tests.helpers import DEFAULT_STAGES
from tests.helpers import new_tenant as other_tenant

BEARER_INVALID = 'Bearer error="invalid_token"'
ROLES = ["ROLE_CUSTOMER_VIEWER", "ROLE_ACCOUNT_MANAGER", "ROLE_TENANT_ADMIN", "ROLE_SUPER_ADMIN"]
# The table of CONTRACT section 2, written out here rather than imported from the code.
PERMISSIONS = {
    "ROLE_CUSTOMER_VIEWER": {"VIEW_LIFECYCLE"},
    "ROLE_ACCOUNT_MANAGER": {"VIEW_LIFECYCLE", "UPDATE_LIFECYCLE", "VIEW_HISTORY"},
    "ROLE_TENANT_ADMIN": {"VIEW_LIFECYCLE", "UPDATE_LIFECYCLE", "VIEW_HISTORY", "CONFIGURE_STAGES"},
    "ROLE_SUPER_ADMIN": {"VIEW_LIFECYCLE", "UPDATE_LIFECYCLE", "VIEW_HISTORY", "CONFIGURE_STAGES"},
}

MOVE = """mutation($input: UpdateLifecycleStageInput!) {
  updateLifecycleStage(input: $input) { success customer { lifecycle { stage version } } }
}"""
BULK = """mutation($inputs: [UpdateLifecycleStageInput!]!) {
  updateLifecycleStages(inputs: $inputs) {
    succeeded failed results { customerId success error { code reason } }
  }
}"""
CONFIGURE = """mutation($input: LifecycleStageConfigInput!) {
  configureLifecycleStages(input: $input) { stages version }
}"""
CONFIG = "{ lifecycleStageConfig { stages } }"
LIFECYCLE = "query($id: ID!) { customer(id: $id) { lifecycle { stage version } } }"


def url(customer_id: Any) -> str:
    return f"/api/v1/customers/{customer_id}/lifecycle"


def b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def claims(tenant: str, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": "user-1",
        "tenant_id": tenant,
        "roles": ["ROLE_TENANT_ADMIN"],
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 600,
        **extra,
    }


def unsigned(alg: str) -> Callable[[str], str]:
    def build(tenant: str) -> str:
        return f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(claims(tenant))}."

    return build


def none_with_hmac(tenant: str) -> str:
    """alg none, yet carrying a correct HS256 signature of its own bytes."""
    signing = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims(tenant))}"
    sig = hmac.new(SECRET.encode(), signing.encode(), hashlib.sha256).digest()
    return f"{signing}.{b64(sig)}"


def tampered(tenant: str) -> str:
    """A valid viewer token whose payload was swapped for a super admin's."""
    head, _, sig = make_token("user-1", tenant, ("ROLE_CUSTOMER_VIEWER",)).split(".")
    return f"{head}.{b64(claims(tenant, roles=['ROLE_SUPER_ADMIN']))}.{sig}"


def admin_token(tenant: str, **kwargs: Any) -> str:
    return make_token("user-1", tenant, ("ROLE_TENANT_ADMIN",), **kwargs)


BAD_TOKENS: dict[str, Callable[[str], str]] = {
    "alg-none": unsigned("none"),
    "alg-None": unsigned("None"),
    "alg-NONE": unsigned("NONE"),
    "alg-nOnE": unsigned("nOnE"),
    "alg-none-hmac-signed": none_with_hmac,
    "wrong-secret": lambda t: admin_token(t, secret="another-secret-that-is-long-enough-0123456"),
    "tampered-payload": tampered,
    "signature-stripped": lambda t: admin_token(t).rsplit(".", 1)[0] + ".",
    "expired-beyond-leeway": lambda t: admin_token(t, ttl=-60),
    "expired-long-ago": lambda t: admin_token(t, ttl=-86400),
    "nbf-in-future": lambda t: admin_token(t, nbf=int(time.time()) + 300),
    "missing-exp": lambda t: admin_token(t, drop=("exp",)),
    "missing-sub": lambda t: admin_token(t, drop=("sub",)),
    "missing-tenant_id": lambda t: admin_token(t, drop=("tenant_id",)),
    "wrong-iss": lambda t: admin_token(t, iss="somebody-else"),
    "missing-iss": lambda t: admin_token(t, drop=("iss",)),
    "wrong-aud": lambda t: admin_token(t, aud="another-service"),
    "missing-aud": lambda t: admin_token(t, drop=("aud",)),
    "garbage": lambda t: "garbage",
    "garbage-three-parts": lambda t: "a.b.c",
    "garbage-base64": lambda t: f"{b64(b'xx')}.{b64(b'yy')}.{b64(b'zz')}",
}


async def lifecycle_of(api: Any, customer_id: uuid.UUID) -> dict[str, Any]:
    admin = api.as_("ROLE_TENANT_ADMIN", sub="checker")
    body = await admin.gql(LIFECYCLE, {"id": str(customer_id)}, admin.headers())
    assert "errors" not in body, body
    lifecycle: dict[str, Any] = body["data"]["customer"]["lifecycle"]
    return lifecycle


def assert_gql_unauthenticated(resp: httpx.Response) -> None:
    assert resp.status_code == 401, resp.text
    assert resp.headers["WWW-Authenticate"] == BEARER_INVALID
    body = resp.json()
    assert set(body) == {"errors"}, body
    assert len(body["errors"]) == 1
    error = body["errors"][0]
    assert isinstance(error["message"], str) and error["message"]
    assert error["extensions"]["code"] == "UNAUTHENTICATED"


def assert_rest_error(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert {"code", "message", "details"} <= set(body["error"])


def codes(body: dict[str, Any]) -> list[str]:
    return [e.get("extensions", {}).get("code") for e in body.get("errors") or []]


# --- refused tokens --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
async def test_refused_token_on_graphql_is_401_before_execution(api, make_customer, kind):
    # given a customer in Prospect and a refused token that claims an admin of its tenant
    cid = await make_customer()
    token = BAD_TOKENS[kind](api.tenant)
    # when it sends a mutation
    resp = await api.http.post(
        "/graphql",
        json={"query": MOVE, "variables": {"input": {"customerId": str(cid), "stage": "Active"}}},
        headers={"Authorization": f"Bearer {token}"},
    )
    # then 401 UNAUTHENTICATED with the challenge, and nothing executed
    assert_gql_unauthenticated(resp)
    assert await lifecycle_of(api, cid) == {"stage": "Prospect", "version": 1}


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
async def test_refused_token_on_graphql_query_is_401(api, kind):
    token = BAD_TOKENS[kind](api.tenant)
    resp = await api.http.post(
        "/graphql",
        json={"query": "{ viewer { subject } }"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert_gql_unauthenticated(resp)


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
async def test_refused_token_on_rest_is_401_before_execution(api, make_customer, kind):
    cid = await make_customer()
    token = BAD_TOKENS[kind](api.tenant)
    headers = {"Authorization": f"Bearer {token}"}
    resp = await api.http.patch(url(cid), json={"stage": "Active"}, headers=headers)
    assert_rest_error(resp, 401, "UNAUTHENTICATED")
    assert resp.headers["WWW-Authenticate"] == BEARER_INVALID
    got = await api.http.get(url(cid), headers=headers)
    assert_rest_error(got, 401, "UNAUTHENTICATED")
    assert got.headers["WWW-Authenticate"] == BEARER_INVALID
    assert await lifecycle_of(api, cid) == {"stage": "Prospect", "version": 1}


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param(None, id="no-header"),
        pytest.param("Basic dXNlcjpwYXNz", id="basic"),
        pytest.param("Bearer", id="bare-bearer"),
    ],
)
async def test_missing_or_non_bearer_header_on_graphql(api, make_customer, authorization):
    cid = await make_customer()
    headers = {} if authorization is None else {"Authorization": authorization}
    resp = await api.http.post(
        "/graphql",
        json={"query": MOVE, "variables": {"input": {"customerId": str(cid), "stage": "Active"}}},
        headers=headers,
    )
    assert resp.status_code == 401, resp.text
    expected = "Bearer" if authorization is None else BEARER_INVALID
    assert resp.headers["WWW-Authenticate"] == expected
    body = resp.json()
    assert set(body) == {"errors"}
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert await lifecycle_of(api, cid) == {"stage": "Prospect", "version": 1}


async def test_graphql_get_with_refused_token_is_401(api):
    resp = await api.http.get(
        "/graphql",
        params={"query": "{ viewer { subject } }"},
        headers={"Authorization": f"Bearer {BAD_TOKENS['alg-none'](api.tenant)}"},
    )
    assert_gql_unauthenticated(resp)


async def test_token_expired_within_leeway_is_accepted(api, make_customer):
    # given a token that expired 10 s ago (leeway is 30 s)
    cid = await make_customer()
    token = make_token(api.sub, api.tenant, ("ROLE_ACCOUNT_MANAGER",), ttl=-10)
    headers = {"Authorization": f"Bearer {token}"}
    # when it is used on GraphQL and REST
    body = await api.gql(
        "query($id: ID!) { viewer { subject } customer(id: $id) { id } }",
        {"id": str(cid)},
        headers=headers,
    )
    resp = await api.http.patch(url(cid), json={"stage": "Active"}, headers=headers)
    # then both are served
    assert "errors" not in body, body
    assert body["data"] == {"viewer": {"subject": api.sub}, "customer": {"id": str(cid)}}
    assert resp.status_code == 200, resp.text
    assert await lifecycle_of(api, cid) == {"stage": "Active", "version": 2}


async def test_valid_token_with_nbf_in_past_is_accepted(api):
    token = make_token(api.sub, api.tenant, nbf=int(time.time()) - 60)
    body = await api.gql("{ viewer { subject } }", headers={"Authorization": f"Bearer {token}"})
    assert body["data"]["viewer"]["subject"] == api.sub


# --- X-Tenant-Id on GraphQL ------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES[:3])
async def test_foreign_tenant_header_on_graphql_is_403_before_execution(api, make_customer, role):
    # given a customer of the caller's own tenant
    cid = await make_customer()
    caller = api.as_(role)
    # when a non-super-admin names another tenant
    resp = await api.http.post(
        "/graphql",
        json={"query": MOVE, "variables": {"input": {"customerId": str(cid), "stage": "Active"}}},
        headers=caller.headers(**{"X-Tenant-Id": other_tenant()}),
    )
    # then HTTP 403 FORBIDDEN and nothing executed
    assert resp.status_code == 403, resp.text
    body = resp.json()
    assert "data" not in body or body["data"] is None
    assert codes(body) == ["FORBIDDEN"]
    assert await lifecycle_of(api, cid) == {"stage": "Prospect", "version": 1}


@pytest.mark.parametrize("role", ROLES)
async def test_own_tenant_header_on_graphql_is_harmless(api, make_customer, role):
    cid = await make_customer()
    caller = api.as_(role)
    body = await caller.gql(
        "query($id: ID!) { viewer { tenantId } customer(id: $id) { id } }",
        {"id": str(cid)},
        caller.headers(**{"X-Tenant-Id": api.tenant}),
    )
    assert "errors" not in body, body
    assert body["data"] == {"viewer": {"tenantId": api.tenant}, "customer": {"id": str(cid)}}


async def test_super_admin_with_tenant_header_acts_in_that_tenant(api, make_customer):
    # given a customer in another tenant and one in the super admin's own tenant
    other = other_tenant()
    foreign = await make_customer(other)
    own = await make_customer()
    admin = api.as_("ROLE_SUPER_ADMIN", sub="root-1")
    headers = admin.headers(**{"X-Tenant-Id": other})
    # when the super admin names the other tenant
    body = await admin.gql(
        """query($f: ID!, $o: ID!) {
          viewer { tenantId subject }
          f: customer(id: $f) { id tenantId }
          o: customer(id: $o) { id }
          customers { totalCount edges { node { id } } }
          lifecycleSummary { total }
        }""",
        {"f": str(foreign), "o": str(own)},
        headers,
    )
    # then it sees that tenant's data, and only that tenant's
    assert "errors" not in body, body
    data = body["data"]
    assert data["viewer"] == {"tenantId": other, "subject": "root-1"}
    assert data["f"] == {"id": str(foreign), "tenantId": other}
    assert data["o"] is None
    assert [e["node"]["id"] for e in data["customers"]["edges"]] == [str(foreign)]
    assert data["customers"]["totalCount"] == 1
    assert data["lifecycleSummary"]["total"] == 1


async def test_super_admin_with_tenant_header_changes_that_tenant(api, make_customer):
    other = other_tenant()
    foreign = await make_customer(other)
    admin = api.as_("ROLE_SUPER_ADMIN", sub="root-1")
    headers = admin.headers(**{"X-Tenant-Id": other})
    moved = await admin.gql(
        MOVE, {"input": {"customerId": str(foreign), "stage": "Active"}}, headers
    )
    assert "errors" not in moved, moved
    owner = api.as_("ROLE_TENANT_ADMIN", tenant=other)
    assert await lifecycle_of(owner, foreign) == {"stage": "Active", "version": 2}


async def test_super_admin_configures_other_tenant_with_header(api):
    other = other_tenant()
    admin = api.as_("ROLE_SUPER_ADMIN", sub="root-1")
    stages = [*DEFAULT_STAGES, "Dormant"]
    body = await admin.gql(
        CONFIGURE, {"input": {"stages": stages}}, admin.headers(**{"X-Tenant-Id": other})
    )
    assert "errors" not in body, body
    owner = api.as_("ROLE_TENANT_ADMIN", tenant=other)
    assert (await owner.gql(CONFIG))["data"]["lifecycleStageConfig"]["stages"] == stages
    assert (await api.gql(CONFIG))["data"]["lifecycleStageConfig"]["stages"] == DEFAULT_STAGES


# --- the role matrix -------------------------------------------------------------------------

OPERATIONS = {
    "customer": "VIEW_LIFECYCLE",
    "customers": "VIEW_LIFECYCLE",
    "lifecycleSummary": "VIEW_LIFECYCLE",
    "lifecycleStageConfig": "VIEW_LIFECYCLE",
    "lifecycleHistory": "VIEW_HISTORY",
    "stageDurations": "VIEW_HISTORY",
    "stageAt": "VIEW_HISTORY",
    "updateLifecycleStage": "UPDATE_LIFECYCLE",
    "updateLifecycleStages": "UPDATE_LIFECYCLE",
    "configureLifecycleStages": "CONFIGURE_STAGES",
    "rest GET": "VIEW_LIFECYCLE",
    "rest PATCH": "UPDATE_LIFECYCLE",
}


class World:
    """The caller's tenant with one customer, and another tenant with one customer."""

    def __init__(self, api: Any, caller: Any, own: uuid.UUID, other: str, foreign: uuid.UUID):
        self.api, self.caller, self.own, self.other, self.foreign = api, caller, own, other, foreign
        self.owner = api.as_("ROLE_TENANT_ADMIN", sub="owner", tenant=other)

    async def gql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = await self.caller.gql(query, variables, self.caller.headers())
        return body


def assert_forbidden(body: dict[str, Any], path: list[str]) -> None:
    errors = body.get("errors") or []
    assert [e["extensions"]["code"] for e in errors] == ["FORBIDDEN"], body
    assert errors[0]["path"] == path


def assert_no_forbidden(body: dict[str, Any]) -> None:
    assert "FORBIDDEN" not in codes(body), body


async def check_customer(w: World, foreign: bool, allowed: bool) -> None:
    target = w.foreign if foreign else w.own
    body = await w.gql("query($id: ID!) { customer(id: $id) { id } }", {"id": str(target)})
    if not allowed:
        assert_forbidden(body, ["customer"])
    elif foreign:
        assert "errors" not in body, body
        assert body["data"]["customer"] is None
    else:
        assert "errors" not in body, body
        assert body["data"]["customer"] == {"id": str(w.own)}


async def check_customers(w: World, foreign: bool, allowed: bool) -> None:
    body = await w.gql("{ customers { totalCount edges { node { id } } } }")
    if not allowed:
        assert_forbidden(body, ["customers"])
        return
    assert "errors" not in body, body
    ids = [e["node"]["id"] for e in body["data"]["customers"]["edges"]]
    assert ids == [str(w.own)]
    assert str(w.foreign) not in ids
    assert body["data"]["customers"]["totalCount"] == 1


async def check_lifecycle_summary(w: World, foreign: bool, allowed: bool) -> None:
    # the other tenant holds two customers: a leak would show in the counts
    body = await w.gql("{ lifecycleSummary { total stages { stage count } } }")
    if not allowed:
        assert_forbidden(body, ["lifecycleSummary"])
        return
    assert "errors" not in body, body
    summary = body["data"]["lifecycleSummary"]
    assert summary["total"] == 1
    assert summary["stages"][0] == {"stage": "Prospect", "count": 1}
    assert [s["stage"] for s in summary["stages"]] == DEFAULT_STAGES


async def check_stage_config(w: World, foreign: bool, allowed: bool) -> None:
    # the other tenant (foreign) or the caller's own tenant has a custom configuration
    custom = [*DEFAULT_STAGES, "Dormant"]
    configurer = w.owner if foreign else w.api.as_("ROLE_TENANT_ADMIN", sub="setup")
    saved = await configurer.gql(CONFIGURE, {"input": {"stages": custom}}, configurer.headers())
    assert "errors" not in saved, saved
    body = await w.gql(CONFIG)
    if not allowed:
        assert_forbidden(body, ["lifecycleStageConfig"])
        return
    assert "errors" not in body, body
    expected = DEFAULT_STAGES if foreign else custom
    assert body["data"]["lifecycleStageConfig"]["stages"] == expected


async def _history_field(w: World, foreign: bool, allowed: bool, field: str, sel: str) -> Any:
    target = w.foreign if foreign else w.own
    body = await w.gql(
        f"query($id: ID!) {{ customer(id: $id) {{ id {field} {sel} }} }}", {"id": str(target)}
    )
    if foreign:
        # another tenant's customer is not there, whatever the role: null, never FORBIDDEN
        assert "errors" not in body, body
        assert body["data"]["customer"] is None
        return None
    if not allowed:
        assert_forbidden(body, ["customer", field.split("(")[0]])
        return None
    assert "errors" not in body, body
    return body["data"]["customer"][field.split("(")[0]]


async def check_history(w: World, foreign: bool, allowed: bool) -> None:
    got = await _history_field(
        w, foreign, allowed, "lifecycleHistory", "{ totalCount edges { node { toStage source } } }"
    )
    if got is not None:
        assert got["totalCount"] == 1
        assert got["edges"][0]["node"] == {"toStage": "Prospect", "source": "SYSTEM"}


async def check_durations(w: World, foreign: bool, allowed: bool) -> None:
    got = await _history_field(w, foreign, allowed, "stageDurations", "{ stage entries }")
    if got is not None:
        assert got == [{"stage": "Prospect", "entries": 1}]


async def check_stage_at(w: World, foreign: bool, allowed: bool) -> None:
    as_of = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
    target = w.foreign if foreign else w.own
    body = await w.gql(
        f'query($id: ID!) {{ customer(id: $id) {{ id stageAt(asOf: "{as_of}") }} }}',
        {"id": str(target)},
    )
    if foreign:
        assert "errors" not in body, body
        assert body["data"]["customer"] is None
    elif not allowed:
        assert_forbidden(body, ["customer", "stageAt"])
        assert body["data"]["customer"] in (None, {"id": str(w.own), "stageAt": None})
    else:
        assert "errors" not in body, body
        assert body["data"]["customer"] == {"id": str(w.own), "stageAt": "Prospect"}


async def _unchanged(w: World) -> None:
    assert await lifecycle_of(w.api, w.own) == {"stage": "Prospect", "version": 1}
    assert await lifecycle_of(w.owner, w.foreign) == {"stage": "Prospect", "version": 1}


async def check_update(w: World, foreign: bool, allowed: bool) -> None:
    target = w.foreign if foreign else w.own
    body = await w.gql(MOVE, {"input": {"customerId": str(target), "stage": "Active"}})
    if not allowed:
        # the role lacks the permission: FORBIDDEN comes before NOT_FOUND (section 3 order)
        assert_forbidden(body, ["updateLifecycleStage"])
        await _unchanged(w)
    elif foreign:
        assert codes(body) == ["NOT_FOUND"], body
        await _unchanged(w)
    else:
        assert "errors" not in body, body
        lifecycle = body["data"]["updateLifecycleStage"]["customer"]["lifecycle"]
        assert lifecycle == {"stage": "Active", "version": 2}
        assert await lifecycle_of(w.api, w.own) == {"stage": "Active", "version": 2}


async def check_bulk(w: World, foreign: bool, allowed: bool) -> None:
    target = w.foreign if foreign else w.own
    body = await w.gql(BULK, {"inputs": [{"customerId": str(target), "stage": "Active"}]})
    if not allowed:
        assert_forbidden(body, ["updateLifecycleStages"])
        await _unchanged(w)
        return
    assert "errors" not in body, body
    payload = body["data"]["updateLifecycleStages"]
    if foreign:
        assert (payload["succeeded"], payload["failed"]) == (0, 1)
        assert payload["results"][0]["success"] is False
        assert payload["results"][0]["error"]["code"] == "NOT_FOUND"
        await _unchanged(w)
    else:
        assert (payload["succeeded"], payload["failed"]) == (1, 0)
        assert payload["results"][0]["success"] is True
        assert await lifecycle_of(w.api, w.own) == {"stage": "Active", "version": 2}


async def check_configure(w: World, foreign: bool, allowed: bool) -> None:
    # without X-Tenant-Id a configuration only ever touches the caller's own tenant
    custom = [*DEFAULT_STAGES, "Dormant"]
    body = await w.gql(CONFIGURE, {"input": {"stages": custom}})
    own_after = (await w.api.gql(CONFIG))["data"]["lifecycleStageConfig"]["stages"]
    other_after = (await w.owner.gql(CONFIG, None, w.owner.headers()))["data"][
        "lifecycleStageConfig"
    ]["stages"]
    assert other_after == DEFAULT_STAGES
    if not allowed:
        assert_forbidden(body, ["configureLifecycleStages"])
        assert own_after == DEFAULT_STAGES
    else:
        assert "errors" not in body, body
        assert body["data"]["configureLifecycleStages"]["stages"] == custom
        assert own_after == custom


async def check_rest_get(w: World, foreign: bool, allowed: bool) -> None:
    target = w.foreign if foreign else w.own
    resp = await w.api.http.get(url(target), headers=w.caller.headers())
    if not allowed:
        assert_rest_error(resp, 403, "FORBIDDEN")
    elif foreign:
        assert_rest_error(resp, 404, "NOT_FOUND")
    else:
        assert resp.status_code == 200, resp.text
        assert resp.json()["customer_id"] == str(w.own)


async def check_rest_patch(w: World, foreign: bool, allowed: bool) -> None:
    target = w.foreign if foreign else w.own
    resp = await w.api.http.patch(url(target), json={"stage": "Active"}, headers=w.caller.headers())
    if not allowed:
        assert_rest_error(resp, 403, "FORBIDDEN")
        await _unchanged(w)
    elif foreign:
        assert_rest_error(resp, 404, "NOT_FOUND")
        await _unchanged(w)
    else:
        assert resp.status_code == 200, resp.text
        assert resp.json()["version"] == 2
        assert await lifecycle_of(w.api, w.own) == {"stage": "Active", "version": 2}


CHECKS = {
    "customer": check_customer,
    "customers": check_customers,
    "lifecycleSummary": check_lifecycle_summary,
    "lifecycleStageConfig": check_stage_config,
    "lifecycleHistory": check_history,
    "stageDurations": check_durations,
    "stageAt": check_stage_at,
    "updateLifecycleStage": check_update,
    "updateLifecycleStages": check_bulk,
    "configureLifecycleStages": check_configure,
    "rest GET": check_rest_get,
    "rest PATCH": check_rest_patch,
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
@pytest.mark.parametrize("scope", ["own", "foreign"])
@pytest.mark.parametrize("role", ROLES)
async def test_role_matrix(api, make_customer, role, scope, operation):
    # given a customer in the caller's tenant and one in another tenant
    other = other_tenant()
    own = await make_customer()
    foreign = await make_customer(other)
    await make_customer(other)  # the other tenant is bigger, so leaks show in counts
    caller = api.as_(role, sub="caller-1")
    world = World(api, caller, own, other, foreign)
    # when the role performs the operation (without X-Tenant-Id)
    # then the outcome follows the permission table, and other tenants stay invisible
    allowed = OPERATIONS[operation] in PERMISSIONS[role]
    await CHECKS[operation](world, scope == "foreign", allowed)


def _rejected(reason: str) -> float:
    from customer360.observability import REGISTRY

    value = REGISTRY.get_sample_value("c360_requests_rejected_total", {"reason": reason})
    return value or 0.0


async def test_refusals_on_rest_are_counted_like_those_on_graphql(api, make_customer):
    cid = await make_customer()
    before = {r: _rejected(r) for r in ("unauthenticated", "forbidden_tenant")}
    # when REST and GraphQL each refuse a bad token and a foreign tenant header
    bad = {"Authorization": f"Bearer {next(iter(BAD_TOKENS.values()))(api.tenant)}"}
    foreign = api.headers(**{"X-Tenant-Id": other_tenant()})
    for headers, status in ((bad, 401), (foreign, 403)):
        rest = await api.http.patch(url(cid), json={"stage": "Active"}, headers=headers)
        gql = await api.http.post("/graphql", json={"query": MOVE}, headers=headers)
        assert (rest.status_code, gql.status_code) == (status, status)
    # then c360_requests_rejected_total counts all four, by reason
    assert _rejected("unauthenticated") == before["unauthenticated"] + 2
    assert _rejected("forbidden_tenant") == before["forbidden_tenant"] + 2


# What a refused token is told, in the contract's words (never a class or library message).
EXPECTED_WHY = {
    "wrong-secret": "signature",
    "tampered-payload": "signature",
    "expired-beyond-leeway": "expired",
    "expired-long-ago": "expired",
    "nbf-in-future": "not valid yet",
    "missing-exp": "exp",
    "missing-sub": "sub",
    "missing-tenant_id": "tenant_id",
    "wrong-iss": "issuer",
    "missing-iss": "iss",
    "wrong-aud": "audience",
    "missing-aud": "aud",
    "alg-none": "algorithm",
    "garbage": "malformed",
}
# A class name (UnicodeDecodeError, JoseError, KeyError...) or a library's own phrasing.
LEAK = re.compile(r"[A-Z][a-z]+(?:[A-Z][a-z]+)*(?:Error|Exception)\b|invalid_claim|decode_error")


async def test_every_bad_token_answer_says_what_is_wrong_without_internal_names(
    api, server
) -> None:
    from tests.live.wsclient import connect

    for kind, make in BAD_TOKENS.items():
        token = make(api.tenant)
        gql = await api.http.post(
            "/graphql",
            json={"query": "{ viewer { subject } }"},
            headers={"Authorization": f"Bearer {token}"},
        )
        rest = await api.http.get(url(uuid.uuid4()), headers={"Authorization": f"Bearer {token}"})
        async with connect(server.url, {"Authorization": f"Bearer {token}"}, ack=False) as ws:
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.receive()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
        answers = [
            gql.json()["errors"][0]["message"],
            rest.json()["error"]["message"],
            closed.value.rcvd.reason,
        ]
        for message in answers:
            assert message and not LEAK.search(message), (kind, answers)
        assert len(set(answers)) == 1, (kind, answers)  # one wording on every transport
        if kind in EXPECTED_WHY:
            assert EXPECTED_WHY[kind] in answers[0].lower(), (kind, answers[0])
