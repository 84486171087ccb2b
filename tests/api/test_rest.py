"""The REST shim, CONTRACT section 3: one test per error row, the precedence order, GET, OpenAPI.

Every test talks to the real running server over HTTP with real tokens.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest

from tests.conftest import make_token
from tests.helpers import DEFAULT_STAGES, move
from tests.helpers import new_tenant as other_tenant

BEARER_INVALID = 'Bearer error="invalid_token"'


def url(customer_id: Any) -> str:
    return f"/api/v1/customers/{customer_id}/lifecycle"


async def send(
    api: Any, customer_id: Any, content: bytes, headers: dict[str, str] | None = None
) -> httpx.Response:
    """A PATCH with exactly these bytes and headers (no token unless given)."""
    return await api.http.patch(url(customer_id), content=content, headers=headers or {})


def json_headers(api: Any, **extra: str) -> dict[str, str]:
    return api.headers(**{"Content-Type": "application/json", **extra})


async def status(api: Any, customer_id: Any) -> dict[str, Any]:
    resp = await api.http.get(url(customer_id), headers=api.headers())
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def assert_error(
    resp: httpx.Response, http_status: int, code: str, reason: str | None = None
) -> dict[str, Any]:
    assert resp.status_code == http_status, resp.text
    body = resp.json()
    assert body["success"] is False
    error = body["error"]
    assert {"code", "message", "details"} <= set(error), body
    assert error["code"] == code, body
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["details"], dict)
    if reason is not None:
        assert error["details"].get("reason") == reason, body
    text = resp.text
    assert "Traceback" not in text and "sqlalchemy" not in text.lower()
    return error


async def configure(api: Any, **config: Any) -> None:
    admin = api.as_("ROLE_TENANT_ADMIN", sub="admin-1")
    body = await admin.gql(
        "mutation($input: LifecycleStageConfigInput!) { configureLifecycleStages(input: $input)"
        " { version stages } }",
        {"input": config},
        admin.headers(),
    )
    assert "errors" not in body, body


# --- 200 -------------------------------------------------------------------------------------


async def test_seed_payload_changes_stage_and_answers_seed_shape(api, make_customer):
    # given a customer in Prospect at version 1, and the seed's user-42
    cid = await make_customer()
    user = api.as_("ROLE_ACCOUNT_MANAGER", sub="user-42")
    # when the seed payload is sent
    resp = await user.patch(
        cid,
        {
            "stage": "At-Risk",
            "updated_by": "user-42",
            "reason_code": "Low Engagement",
            "expected_version": 1,
        },
    )
    # then the seed response shape comes back, with an ETag of the new version
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"success", "updated_at", "stage", "version"}
    assert body["success"] is True
    assert body["stage"] == "At-Risk"
    assert body["version"] == 2
    assert datetime.fromisoformat(body["updated_at"].replace("Z", "+00:00")).tzinfo is not None
    assert resp.headers["ETag"] == '"2"'
    # and the change is recorded with source API and the token's subject
    now = await status(user, cid)
    assert now["stage"] == "At-Risk"
    assert now["version"] == 2
    assert now["source"] == "API"
    assert now["updated_by"] == "user-42"
    assert now["reason_code"] == "Low Engagement"


async def test_minimal_body_with_only_stage_succeeds(api, make_customer):
    cid = await make_customer()
    resp = await api.patch(cid, {"stage": "Onboarded"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["stage"] == "Onboarded"
    assert (await status(api, cid))["updated_by"] == api.sub


async def test_matching_if_match_succeeds(api, make_customer):
    cid = await make_customer()
    resp = await api.patch(cid, {"stage": "Active", "expected_version": 1}, **{"If-Match": '"1"'})
    assert resp.status_code == 200, resp.text
    assert resp.json()["version"] == 2


async def test_move_to_current_stage_is_a_noop(api, make_customer):
    # given a customer in Prospect
    cid = await make_customer()
    before = await status(api, cid)
    # when it is moved to Prospect
    resp = await api.patch(cid, {"stage": "Prospect"})
    # then 200 with the unchanged version, and nothing changed
    assert resp.status_code == 200, resp.text
    assert resp.json()["stage"] == "Prospect"
    assert resp.json()["version"] == before["version"] == 1
    after = await status(api, cid)
    assert after == before


async def test_a_noop_after_a_profile_change_answers_the_lifecycle_time(api, make_customer, engine):
    from tests.helpers import apply_event, event

    # given a customer whose profile changed after its last lifecycle change
    cid = await make_customer()
    before = await status(api, cid)
    profile = event("customer.updated", api.tenant, {"customer_id": str(cid), "tier": "ENTERPRISE"})
    assert (await apply_event(engine, profile)).value == "applied"
    # when it is moved to the stage it is in
    resp = await api.patch(cid, {"stage": before["stage"]})
    # then the answer carries the lifecycle's time, as GET does, not the profile's
    assert resp.status_code == 200, resp.text
    assert (
        resp.json()["updated_at"] == before["updated_at"] == (await status(api, cid))["updated_at"]
    )


async def test_idempotent_replay_returns_same_body_and_changes_nothing(api, make_customer):
    # given a change made with an Idempotency-Key
    cid = await make_customer()
    key = uuid.uuid4().hex
    first = await api.patch(cid, {"stage": "Onboarded"}, **{"Idempotency-Key": key})
    assert first.status_code == 200, first.text
    # when the very same request is sent again
    second = await api.patch(cid, {"stage": "Onboarded"}, **{"Idempotency-Key": key})
    # then the first result comes back and the version did not move
    assert second.status_code == 200, second.text
    assert second.json() == first.json()
    now = await status(api, cid)
    assert now["version"] == first.json()["version"] == 2


async def test_replay_after_a_later_change_still_returns_first_result(api, make_customer):
    cid = await make_customer()
    key = uuid.uuid4().hex
    first = await api.patch(cid, {"stage": "Onboarded"}, **{"Idempotency-Key": key})
    assert first.status_code == 200, first.text
    await move(api, cid, "Active")
    again = await api.patch(cid, {"stage": "Onboarded"}, **{"Idempotency-Key": key})
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    now = await status(api, cid)
    assert (now["stage"], now["version"]) == ("Active", 3)


# --- GET -------------------------------------------------------------------------------------


async def test_get_returns_all_fields_and_etag(api, make_customer):
    cid = await make_customer()
    resp = await api.http.get(url(cid), headers=api.headers())
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {
        "customer_id",
        "stage",
        "entered_at",
        "updated_at",
        "updated_by",
        "reason_code",
        "source",
        "version",
        "allowed_next_stages",
    }
    assert body["customer_id"] == str(cid)
    assert body["stage"] == "Prospect"
    assert body["source"] == "SYSTEM"
    assert body["updated_by"] == "crm"  # the creating event's source
    assert body["reason_code"] is None
    assert body["version"] == 1
    for key in ("entered_at", "updated_at"):
        assert datetime.fromisoformat(body[key].replace("Z", "+00:00")).tzinfo is not None
    assert resp.headers["ETag"] == '"1"'
    assert "Prospect" not in body["allowed_next_stages"]
    assert sorted(body["allowed_next_stages"]) == sorted(set(DEFAULT_STAGES) - {"Prospect"})


async def test_get_allowed_next_stages_follow_rules_and_omit_current(api, make_customer):
    await configure(
        api,
        stages=DEFAULT_STAGES,
        requiredReasonCodes=["At-Risk", "Churned"],
        transitions=[{"from": "Prospect", "to": ["Prospect", "Onboarded"]}],
    )
    cid = await make_customer()
    body = await status(api, cid)
    assert body["allowed_next_stages"] == ["Onboarded"]


async def test_get_etag_follows_version(api, make_customer):
    cid = await make_customer()
    await move(api, cid, "Active")
    resp = await api.http.get(url(cid), headers=api.headers())
    assert resp.headers["ETag"] == '"2"'
    assert resp.json()["version"] == 2


async def test_get_if_none_match_current_is_304(api, make_customer):
    cid = await make_customer()
    resp = await api.http.get(url(cid), headers=api.headers(**{"If-None-Match": '"1"'}))
    assert resp.status_code == 304
    assert resp.content == b""
    assert resp.headers["ETag"] == '"1"'


async def test_get_if_none_match_stale_is_200(api, make_customer):
    cid = await make_customer()
    await move(api, cid, "Active")
    resp = await api.http.get(url(cid), headers=api.headers(**{"If-None-Match": '"1"'}))
    assert resp.status_code == 200
    assert resp.json()["stage"] == "Active"


# --- 400 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"{not json", id="malformed-json"),
        pytest.param(b"", id="empty"),
        pytest.param(b'["Active"]', id="array"),
        pytest.param(b'"Active"', id="string"),
        pytest.param(b"42", id="number"),
        pytest.param(b"null", id="null"),
        pytest.param(b"{}", id="missing-stage"),
        pytest.param(b'{"stage": ""}', id="empty-stage"),
        pytest.param(b'{"stage": 5}', id="stage-not-string"),
        pytest.param(b'{"stage": "Active", "expected_version": "1"}', id="version-string"),
        pytest.param(b'{"stage": "Active", "expected_version": -1}', id="version-negative"),
        pytest.param(b'{"stage": "Active", "updated_by": 7}', id="updated-by-not-string"),
    ],
)
async def test_malformed_body_is_400(api, make_customer, raw):
    # given a customer
    cid = await make_customer()
    # when a malformed body is sent
    resp = await send(api, cid, raw, json_headers(api))
    # then 400 BAD_USER_INPUT and nothing changed
    assert_error(resp, 400, "BAD_USER_INPUT")
    assert (await status(api, cid))["version"] == 1


@pytest.mark.parametrize("method", ["PATCH", "GET"])
@pytest.mark.parametrize("bad_id", ["not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g"])
async def test_bad_id_is_400_invalid_id(api, method, bad_id):
    resp = await api.http.request(
        method,
        url(bad_id),
        content=json.dumps({"stage": "Active"}).encode() if method == "PATCH" else None,
        headers=json_headers(api),
    )
    assert_error(resp, 400, "BAD_USER_INPUT", "INVALID_ID")


async def test_unknown_stage_is_400_invalid_stage(api, make_customer):
    cid = await make_customer()
    resp = await api.patch(cid, {"stage": "Zombie"})
    assert_error(resp, 400, "BAD_USER_INPUT", "INVALID_STAGE")
    assert (await status(api, cid))["stage"] == "Prospect"


@pytest.mark.parametrize("reason", [None, "", "   "])
async def test_missing_reason_where_required_is_400_reason_required(api, make_customer, reason):
    cid = await make_customer()
    body: dict[str, Any] = {"stage": "Churned"}
    if reason is not None:
        body["reason_code"] = reason
    resp = await api.patch(cid, body)
    assert_error(resp, 400, "BAD_USER_INPUT", "REASON_REQUIRED")
    assert (await status(api, cid))["stage"] == "Prospect"


async def test_move_outside_tenant_rules_is_400_transition_not_allowed(api, make_customer):
    # given a tenant whose Prospects may only become Onboarded
    await configure(
        api,
        stages=DEFAULT_STAGES,
        requiredReasonCodes=["At-Risk", "Churned"],
        transitions=[{"from": "Prospect", "to": ["Onboarded"]}],
    )
    cid = await make_customer()
    # when a Prospect is moved to Active
    resp = await api.patch(cid, {"stage": "Active"})
    # then 400 TRANSITION_NOT_ALLOWED, and the allowed move still works
    assert_error(resp, 400, "BAD_USER_INPUT", "TRANSITION_NOT_ALLOWED")
    assert (await status(api, cid))["stage"] == "Prospect"
    assert (await api.patch(cid, {"stage": "Onboarded"})).status_code == 200


async def test_if_match_and_expected_version_disagree_is_400(api, make_customer):
    cid = await make_customer()
    resp = await api.patch(cid, {"stage": "Active", "expected_version": 1}, **{"If-Match": '"2"'})
    assert_error(resp, 400, "BAD_USER_INPUT")
    assert (await status(api, cid))["version"] == 1


@pytest.mark.parametrize("if_match", ["1", '"abc"', '"1', "W/", '"-1"'])
async def test_malformed_if_match_is_400(api, make_customer, if_match):
    cid = await make_customer()
    resp = await api.patch(cid, {"stage": "Active"}, **{"If-Match": if_match})
    assert_error(resp, 400, "BAD_USER_INPUT")
    assert (await status(api, cid))["version"] == 1


# --- 401 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PATCH", "GET"])
async def test_no_authorization_header_is_401_plain_bearer(api, make_customer, method):
    cid = await make_customer()
    resp = await api.http.request(
        method,
        url(cid),
        content=b'{"stage": "Active"}' if method == "PATCH" else None,
        headers={"Content-Type": "application/json"},
    )
    assert_error(resp, 401, "UNAUTHENTICATED")
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert (await status(api, cid))["version"] == 1


@pytest.mark.parametrize(
    "authorization",
    [
        pytest.param("Bearer not-a-token", id="garbage"),
        pytest.param("Bearer a.b.c", id="three-garbage-parts"),
        pytest.param("Basic dXNlcjpwYXNz", id="basic"),
        pytest.param("Bearer", id="bare-bearer"),
        pytest.param("Token abc", id="other-scheme"),
        pytest.param("", id="empty"),
    ],
)
@pytest.mark.parametrize("method", ["PATCH", "GET"])
async def test_refused_authorization_is_401_invalid_token(
    api, make_customer, method, authorization
):
    cid = await make_customer()
    resp = await api.http.request(
        method,
        url(cid),
        content=b'{"stage": "Active"}' if method == "PATCH" else None,
        headers={"Content-Type": "application/json", "Authorization": authorization},
    )
    assert_error(resp, 401, "UNAUTHENTICATED")
    assert resp.headers["WWW-Authenticate"] == BEARER_INVALID
    assert (await status(api, cid))["version"] == 1


async def test_expired_token_is_401(api, make_customer):
    cid = await make_customer()
    token = make_token(api.sub, api.tenant, ("ROLE_TENANT_ADMIN",), ttl=-120)
    resp = await send(
        api,
        cid,
        b'{"stage": "Active"}',
        {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    assert_error(resp, 401, "UNAUTHENTICATED")
    assert resp.headers["WWW-Authenticate"] == BEARER_INVALID
    assert (await status(api, cid))["version"] == 1


# --- 403 -------------------------------------------------------------------------------------


async def test_viewer_may_not_patch_403(api, make_customer):
    cid = await make_customer()
    viewer = api.as_("ROLE_CUSTOMER_VIEWER")
    resp = await viewer.patch(cid, {"stage": "Active"})
    assert_error(resp, 403, "FORBIDDEN")
    assert (await status(api, cid))["version"] == 1


async def test_viewer_may_get(api, make_customer):
    cid = await make_customer()
    viewer = api.as_("ROLE_CUSTOMER_VIEWER")
    assert (await status(viewer, cid))["stage"] == "Prospect"


@pytest.mark.parametrize("role", ["ROLE_ACCOUNT_MANAGER", "ROLE_TENANT_ADMIN"])
@pytest.mark.parametrize("method", ["PATCH", "GET"])
async def test_foreign_tenant_header_for_non_super_admin_is_403(api, make_customer, role, method):
    # given a customer in another tenant, and a non-super-admin of this tenant
    other = other_tenant()
    foreign = await make_customer(other)
    caller = api.as_(role)
    # when it names the other tenant in X-Tenant-Id
    resp = await api.http.request(
        method,
        url(foreign),
        content=b'{"stage": "Active"}' if method == "PATCH" else None,
        headers=json_headers(caller, **{"X-Tenant-Id": other}),
    )
    # then 403 FORBIDDEN and the other tenant's customer did not change
    assert_error(resp, 403, "FORBIDDEN")
    owner = api.as_("ROLE_TENANT_ADMIN", tenant=other)
    assert (await status(owner, foreign))["version"] == 1


async def test_own_tenant_header_is_harmless(api, make_customer):
    cid = await make_customer()
    resp = await api.patch(cid, {"stage": "Active"}, **{"X-Tenant-Id": api.tenant})
    assert resp.status_code == 200, resp.text
    got = await api.http.get(url(cid), headers=api.headers(**{"X-Tenant-Id": api.tenant}))
    assert got.status_code == 200
    assert got.json()["stage"] == "Active"


async def test_updated_by_mismatch_is_403(api, make_customer):
    cid = await make_customer()
    resp = await api.patch(cid, {"stage": "Active", "updated_by": "somebody-else"})
    assert_error(resp, 403, "FORBIDDEN")
    assert (await status(api, cid))["version"] == 1


async def test_super_admin_acts_in_other_tenant_with_header(api, make_customer):
    # given a customer in another tenant and a super admin of this tenant
    other = other_tenant()
    foreign = await make_customer(other)
    admin = api.as_("ROLE_SUPER_ADMIN", sub="root-1")
    # when the super admin names that tenant
    resp = await admin.patch(
        foreign, {"stage": "Churned", "reason_code": "Gone"}, **{"X-Tenant-Id": other}
    )
    # then the change is made there, recorded with the super admin's sub
    assert resp.status_code == 200, resp.text
    assert resp.json()["stage"] == "Churned"
    got = await api.http.get(url(foreign), headers=admin.headers(**{"X-Tenant-Id": other}))
    assert got.status_code == 200, got.text
    assert got.json()["stage"] == "Churned"
    assert got.json()["updated_by"] == "root-1"
    # and without the header the super admin stays in its own tenant
    assert_error(await admin.patch(foreign, {"stage": "Active"}), 404, "NOT_FOUND")


# --- 404 -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["PATCH", "GET"])
async def test_unknown_customer_is_404(api, method):
    resp = await api.http.request(
        method,
        url(uuid.uuid4()),
        content=b'{"stage": "Active"}' if method == "PATCH" else None,
        headers=json_headers(api),
    )
    assert_error(resp, 404, "NOT_FOUND")


@pytest.mark.parametrize("role", ["ROLE_ACCOUNT_MANAGER", "ROLE_TENANT_ADMIN", "ROLE_SUPER_ADMIN"])
@pytest.mark.parametrize("method", ["PATCH", "GET"])
async def test_other_tenants_customer_is_404_not_403(api, make_customer, role, method):
    other = other_tenant()
    foreign = await make_customer(other)
    caller = api.as_(role)
    resp = await api.http.request(
        method,
        url(foreign),
        content=b'{"stage": "Active"}' if method == "PATCH" else None,
        headers=json_headers(caller),
    )
    assert_error(resp, 404, "NOT_FOUND")
    owner = api.as_("ROLE_TENANT_ADMIN", tenant=other)
    assert (await status(owner, foreign))["version"] == 1


# --- 409 / 412 -------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["Active", "Prospect"], ids=["other-stage", "current-stage"])
async def test_stale_expected_version_is_409(api, make_customer, target):
    # given a customer at version 2, in Prospect again
    cid = await make_customer()
    await move(api, cid, "Onboarded")
    await move(api, cid, "Prospect")
    # when a change expects version 1
    resp = await api.patch(cid, {"stage": target, "expected_version": 1})
    # then 409 CONFLICT, even when the target is the current stage
    assert_error(resp, 409, "CONFLICT")
    now = await status(api, cid)
    assert (now["stage"], now["version"]) == ("Prospect", 3)


@pytest.mark.parametrize("target", ["Active", "Prospect"], ids=["other-stage", "current-stage"])
async def test_stale_if_match_is_412(api, make_customer, target):
    cid = await make_customer()
    await move(api, cid, "Onboarded")
    await move(api, cid, "Prospect")
    resp = await api.patch(cid, {"stage": target}, **{"If-Match": '"1"'})
    assert_error(resp, 412, "CONFLICT")
    assert (await status(api, cid))["version"] == 3


async def test_stale_if_match_with_same_expected_version_is_412(api, make_customer):
    cid = await make_customer()
    await move(api, cid, "Onboarded")
    resp = await api.patch(cid, {"stage": "Active", "expected_version": 1}, **{"If-Match": '"1"'})
    assert_error(resp, 412, "CONFLICT")


# --- 415 / 413 / 422 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", None, "application/xml"]
)
async def test_body_not_json_media_type_is_415(api, make_customer, content_type):
    cid = await make_customer()
    headers = api.headers()
    if content_type is not None:
        headers["Content-Type"] = content_type
    resp = await send(api, cid, b'{"stage": "Active"}', headers)
    assert_error(resp, 415, "BAD_USER_INPUT")
    assert (await status(api, cid))["version"] == 1


async def test_json_with_charset_is_accepted(api, make_customer):
    cid = await make_customer()
    headers = api.headers(**{"Content-Type": "application/json; charset=utf-8"})
    resp = await send(api, cid, b'{"stage": "Active"}', headers)
    assert resp.status_code == 200, resp.text


async def test_body_over_one_mib_is_413(api, make_customer):
    cid = await make_customer()
    big = json.dumps({"stage": "Active", "reason_code": "x" * (1024 * 1024 + 10)}).encode()
    resp = await send(api, cid, big, json_headers(api))
    assert_error(resp, 413, "BAD_USER_INPUT")
    assert (await status(api, cid))["version"] == 1


async def test_idempotency_key_reused_with_different_body_is_422(api, make_customer):
    # given a change made with a key
    cid = await make_customer()
    key = uuid.uuid4().hex
    first = await api.patch(cid, {"stage": "Onboarded"}, **{"Idempotency-Key": key})
    assert first.status_code == 200, first.text
    # when the key is reused for another change
    resp = await api.patch(cid, {"stage": "Active"}, **{"Idempotency-Key": key})
    # then 422 IDEMPOTENCY_KEY_REUSED and nothing changed
    assert_error(resp, 422, "BAD_USER_INPUT", "IDEMPOTENCY_KEY_REUSED")
    now = await status(api, cid)
    assert (now["stage"], now["version"]) == ("Onboarded", 2)


async def test_failed_attempt_is_not_remembered_by_idempotency_key(api, make_customer):
    cid = await make_customer()
    key = uuid.uuid4().hex
    bad = await api.patch(cid, {"stage": "Churned"}, **{"Idempotency-Key": key})
    assert_error(bad, 400, "BAD_USER_INPUT", "REASON_REQUIRED")
    good = await api.patch(cid, {"stage": "Active"}, **{"Idempotency-Key": key})
    assert good.status_code == 200, good.text
    assert good.json()["stage"] == "Active"


# --- precedence ------------------------------------------------------------------------------


async def test_401_beats_415(api, make_customer):
    cid = await make_customer()
    resp = await send(api, cid, b"garbage", {"Content-Type": "text/plain"})
    assert_error(resp, 401, "UNAUTHENTICATED")
    assert resp.headers["WWW-Authenticate"] == "Bearer"


async def test_401_beats_400_and_404(api):
    resp = await send(
        api, "not-a-uuid", b"{", {"Content-Type": "application/json", "Authorization": "Bearer x"}
    )
    assert_error(resp, 401, "UNAUTHENTICATED")
    assert resp.headers["WWW-Authenticate"] == BEARER_INVALID


async def test_415_beats_400_malformed(api):
    resp = await send(
        api, "not-a-uuid", b"{not json", api.headers(**{"Content-Type": "text/plain"})
    )
    assert_error(resp, 415, "BAD_USER_INPUT")


MALFORMED = {
    "bad-id": ("not-a-uuid", {"stage": "Active"}, {}),
    "bad-json": (None, None, {}),
    "bad-if-match": (None, {"stage": "Active"}, {"If-Match": "nope"}),
    "if-match-disagrees": (None, {"stage": "Active", "expected_version": 1}, {"If-Match": '"2"'}),
}
MALFORMED_VS_403 = [
    pytest.param(name, refusal, id=f"{name}-vs-{refusal}")
    for name in MALFORMED
    for refusal in ("viewer", "foreign-tenant-header", "updated-by")
    if not (name == "bad-json" and refusal == "updated-by")
]


@pytest.mark.parametrize(("malformed", "refusal"), MALFORMED_VS_403)
async def test_400_malformed_beats_403(api, make_customer, malformed, refusal):
    # given a request that is both malformed and refused
    path_id, body, headers = MALFORMED[malformed]
    cid = path_id or await make_customer()
    caller = api.as_("ROLE_CUSTOMER_VIEWER") if refusal == "viewer" else api
    extra = dict(headers)
    if refusal == "foreign-tenant-header":
        extra["X-Tenant-Id"] = other_tenant()
    if body is not None and refusal == "updated-by":
        body = {**body, "updated_by": "somebody-else"}
    raw = b"{oops" if body is None else json.dumps(body).encode()
    # when it is sent
    resp = await send(caller, cid, raw, json_headers(caller, **extra))
    # then the malformation answers
    assert_error(resp, 400, "BAD_USER_INPUT")


@pytest.mark.parametrize("refusal", ["viewer", "foreign-tenant-header", "updated-by"])
async def test_403_beats_404(api, refusal):
    caller = api.as_("ROLE_CUSTOMER_VIEWER") if refusal == "viewer" else api
    body: dict[str, Any] = {"stage": "Active"}
    extra: dict[str, str] = {}
    if refusal == "foreign-tenant-header":
        extra["X-Tenant-Id"] = other_tenant()
    if refusal == "updated-by":
        body["updated_by"] = "somebody-else"
    resp = await caller.patch(uuid.uuid4(), body, **extra)
    assert_error(resp, 403, "FORBIDDEN")


async def test_403_beats_422_and_409(api, make_customer):
    cid = await make_customer()
    key = uuid.uuid4().hex
    assert (await api.patch(cid, {"stage": "Onboarded"}, **{"Idempotency-Key": key})).is_success
    viewer = api.as_("ROLE_CUSTOMER_VIEWER")
    resp = await viewer.patch(cid, {"stage": "Active", "expected_version": 1})
    assert_error(resp, 403, "FORBIDDEN")
    resp = await api.patch(
        cid, {"stage": "Active", "updated_by": "nobody"}, **{"Idempotency-Key": key}
    )
    assert_error(resp, 403, "FORBIDDEN")


async def test_404_beats_422(api, make_customer):
    # given a key already used on one customer
    cid = await make_customer()
    key = uuid.uuid4().hex
    assert (await api.patch(cid, {"stage": "Onboarded"}, **{"Idempotency-Key": key})).is_success
    # when the key is reused on a customer that does not exist
    resp = await api.patch(uuid.uuid4(), {"stage": "Active"}, **{"Idempotency-Key": key})
    # then 404, not 422
    assert_error(resp, 404, "NOT_FOUND")


async def test_404_beats_409_and_stage_rules(api):
    resp = await api.patch(uuid.uuid4(), {"stage": "Zombie", "expected_version": 99})
    assert_error(resp, 404, "NOT_FOUND")


@pytest.mark.parametrize("if_match", [None, '"1"'])
async def test_422_beats_stale_version(api, make_customer, if_match):
    cid = await make_customer()
    key = uuid.uuid4().hex
    assert (await api.patch(cid, {"stage": "Onboarded"}, **{"Idempotency-Key": key})).is_success
    extra = {"Idempotency-Key": key}
    body: dict[str, Any] = {"stage": "Active"}
    if if_match is None:
        body["expected_version"] = 1
    else:
        extra["If-Match"] = if_match
    resp = await api.patch(cid, body, **extra)
    assert_error(resp, 422, "BAD_USER_INPUT", "IDEMPOTENCY_KEY_REUSED")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"stage": "Zombie"}, id="invalid-stage"),
        pytest.param({"stage": "Churned"}, id="reason-required"),
        pytest.param({"stage": "Active"}, id="transition-not-allowed"),
    ],
)
@pytest.mark.parametrize("how", ["expected_version", "If-Match"])
async def test_stale_version_beats_stage_rules(api, make_customer, body, how):
    await configure(
        api,
        stages=DEFAULT_STAGES,
        requiredReasonCodes=["At-Risk", "Churned"],
        transitions=[{"from": "Onboarded", "to": ["Prospect"]}],
    )
    cid = await make_customer()
    await move(api, cid, "Onboarded")
    if how == "expected_version":
        resp = await api.patch(cid, {**body, "expected_version": 1})
        assert_error(resp, 409, "CONFLICT")
    else:
        resp = await api.patch(cid, body, **{"If-Match": '"1"'})
        assert_error(resp, 412, "CONFLICT")


async def test_stage_rules_beat_noop(api, make_customer):
    # given a customer already At-Risk
    cid = await make_customer()
    await move(api, cid, "At-Risk", "Low Engagement")
    # when it is "moved" to At-Risk without the required reason
    resp = await api.patch(cid, {"stage": "At-Risk"})
    # then the stage rule answers before the no-op rule
    assert_error(resp, 400, "BAD_USER_INPUT", "REASON_REQUIRED")
    assert (await status(api, cid))["version"] == 2


async def test_stage_rules_in_order_invalid_stage_first(api, make_customer):
    await configure(
        api,
        stages=DEFAULT_STAGES,
        requiredReasonCodes=["At-Risk", "Churned"],
        transitions=[{"from": "Prospect", "to": ["Onboarded"]}],
    )
    cid = await make_customer()
    assert_error(await api.patch(cid, {"stage": "Zombie"}), 400, "BAD_USER_INPUT", "INVALID_STAGE")
    assert_error(
        await api.patch(cid, {"stage": "Churned"}), 400, "BAD_USER_INPUT", "TRANSITION_NOT_ALLOWED"
    )


# --- OpenAPI ---------------------------------------------------------------------------------


def _resolve_refs(node: Any, root: dict[str, Any]) -> None:
    if isinstance(node, dict):
        ref = node.get("$ref")
        if ref is not None:
            assert ref.startswith("#/"), ref
            target: Any = root
            for part in ref[2:].split("/"):
                assert part in target, f"dangling $ref {ref}"
                target = target[part]
        for value in node.values():
            _resolve_refs(value, root)
    elif isinstance(node, list):
        for value in node:
            _resolve_refs(value, root)


async def test_openapi_describes_the_shim(api):
    # no token needed
    resp = await api.http.get("/openapi.json")
    assert resp.status_code == 200
    spec = resp.json()
    assert str(spec["openapi"]).startswith("3.")
    assert spec["info"]["title"] and spec["info"]["version"]
    _resolve_refs(spec, spec)
    item = spec["paths"]["/api/v1/customers/{id}/lifecycle"]
    patch = set(item["patch"]["responses"])
    get = set(item["get"]["responses"])
    assert patch >= {
        "200",
        "400",
        "401",
        "403",
        "404",
        "409",
        "412",
        "413",
        "415",
        "422",
        "429",
        "500",
    }
    assert get >= {"200", "304", "400", "401", "403", "404", "500"}
    for op in (item["patch"], item["get"]):
        for code, response in op["responses"].items():
            assert "description" in response, code
        names = {p["name"] for p in op.get("parameters", [])}
        assert "id" in names
    patch_names = {p["name"] for p in item["patch"]["parameters"]}
    assert {"If-Match", "Idempotency-Key"} <= patch_names
    assert "application/json" in item["patch"]["requestBody"]["content"]


# --- 500 -------------------------------------------------------------------------------------
# Not tested: no honest way to make the running server fail unexpectedly from outside.
