"""updateLifecycleStage and updateLifecycleStages (bulk) through GraphQL."""

from __future__ import annotations

import uuid
from typing import Any

from tests.helpers import DEFAULT_STAGES, error_of, ts

TRANSITION = "id customerId fromStage toStage changedAt changedBy reasonCode source"

UPDATE = f"""
mutation($input: UpdateLifecycleStageInput!) {{
  updateLifecycleStage(input: $input) {{
    success updatedAt
    transition {{ {TRANSITION} }}
    customer {{
      id updatedAt
      lifecycle {{
        stage enteredAt updatedAt updatedBy reasonCode source version allowedNextStages
      }}
    }}
  }}
}}
"""

BULK = f"""
mutation($inputs: [UpdateLifecycleStageInput!]!) {{
  updateLifecycleStages(inputs: $inputs) {{
    succeeded failed
    results {{
      customerId success
      transition {{ {TRANSITION} }}
      error {{ code reason message }}
    }}
  }}
}}
"""

STATE = """
query($id: ID!) {
  customer(id: $id) {
    updatedAt
    lifecycle { stage enteredAt updatedAt updatedBy reasonCode source version allowedNextStages }
    lifecycleHistory(first: 200) { totalCount edges { node { id fromStage toStage } } }
  }
}
"""


async def state(api: Any, cid: uuid.UUID) -> dict[str, Any]:
    body = await api.gql(STATE, {"id": str(cid)})
    assert "errors" not in body, body
    customer: dict[str, Any] = body["data"]["customer"]
    return customer


async def update(api: Any, cid: Any, stage: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = await api.gql(
        UPDATE, {"input": {"customerId": str(cid), "stage": stage, **extra}}
    )
    return body


def payload(body: dict[str, Any]) -> dict[str, Any]:
    assert "errors" not in body, body
    p: dict[str, Any] = body["data"]["updateLifecycleStage"]
    return p


# --- updateLifecycleStage ---------------------------------------------------------------


async def test_update_moves_stage_and_returns_transition(api, make_customer):
    # given a customer in the initial stage
    cid = await make_customer()
    before = await state(api, cid)
    # when an account manager moves it
    p = payload(await update(api, cid, "Onboarded"))
    # then the payload carries the transition and the new lifecycle
    assert p["success"] is True
    t = p["transition"]
    assert t["customerId"] == str(cid)
    assert (t["fromStage"], t["toStage"]) == ("Prospect", "Onboarded")
    assert t["changedBy"] == api.sub
    assert t["source"] == "UI"
    assert t["reasonCode"] is None
    lc = p["customer"]["lifecycle"]
    assert lc["stage"] == "Onboarded"
    assert lc["version"] == before["lifecycle"]["version"] + 1
    assert lc["updatedBy"] == api.sub
    assert lc["source"] == "UI"
    assert lc["allowedNextStages"] == ["Prospect", "Active", "At-Risk", "Churned"]
    assert ts(p["customer"]["updatedAt"]) > ts(before["updatedAt"])
    assert ts(lc["enteredAt"]) > ts(before["lifecycle"]["enteredAt"])
    assert ts(p["updatedAt"]) == ts(p["customer"]["updatedAt"])
    # and a later read agrees, with one more history row
    after = await state(api, cid)
    assert after["lifecycle"] == lc
    assert after["lifecycleHistory"]["totalCount"] == 2
    assert after["lifecycleHistory"]["edges"][0]["node"]["id"] == t["id"]


async def test_update_to_current_stage_is_a_noop(api, make_customer):
    # given a customer in Prospect
    cid = await make_customer()
    before = await state(api, cid)
    # when it is "moved" to Prospect
    p = payload(await update(api, cid, "Prospect"))
    # then it succeeds without a transition, version, updatedAt or history change
    assert p["success"] is True
    assert p["transition"] is None
    assert p["customer"]["lifecycle"]["version"] == before["lifecycle"]["version"]
    after = await state(api, cid)
    assert after == before


async def test_update_unknown_stage_is_invalid_stage(api, make_customer):
    cid = await make_customer()
    before = await state(api, cid)
    # when moving to a stage the tenant does not have
    body = await update(api, cid, "Nirvana")
    # then BAD_USER_INPUT / INVALID_STAGE and nothing changes
    ext = error_of(body)
    assert (ext["code"], ext["reason"]) == ("BAD_USER_INPUT", "INVALID_STAGE")
    assert await state(api, cid) == before


async def test_update_into_reason_stage_needs_reason(api, make_customer):
    cid = await make_customer()
    before = await state(api, cid)
    # when moving to At-Risk without a reason code
    body = await update(api, cid, "At-Risk")
    # then REASON_REQUIRED and nothing changes
    ext = error_of(body)
    assert (ext["code"], ext["reason"]) == ("BAD_USER_INPUT", "REASON_REQUIRED")
    assert await state(api, cid) == before
    # and with a reason it succeeds and records it
    p = payload(await update(api, cid, "At-Risk", reasonCode="Low Engagement"))
    assert p["transition"]["reasonCode"] == "Low Engagement"
    assert p["customer"]["lifecycle"]["reasonCode"] == "Low Engagement"


async def test_update_with_stale_expected_version_is_conflict(api, make_customer):
    cid = await make_customer()
    before = await state(api, cid)
    version = before["lifecycle"]["version"]
    # when the expected version is not the current one
    for stale in (version - 1, version + 1):
        body = await update(api, cid, "Active", expectedVersion=stale)
        # then CONFLICT and nothing changes
        assert error_of(body)["code"] == "CONFLICT", stale
    assert await state(api, cid) == before
    # and the current version is accepted
    p = payload(await update(api, cid, "Active", expectedVersion=version))
    assert p["customer"]["lifecycle"]["version"] == version + 1


async def test_update_unknown_customer_is_not_found(api, make_customer):
    # given a customer that exists only in another tenant
    other = f"other-{uuid.uuid4().hex[:8]}"
    foreign = await make_customer(tenant_id=other)
    for cid in (uuid.uuid4(), foreign):
        # when moving it
        body = await update(api, cid, "Active")
        # then NOT_FOUND
        assert error_of(body)["code"] == "NOT_FOUND", cid
    # and the foreign customer is untouched
    theirs = await state(api.as_("ROLE_ACCOUNT_MANAGER", tenant=other), foreign)
    assert theirs["lifecycle"]["stage"] == "Prospect"


async def test_update_non_uuid_customer_is_invalid_id(api):
    body = await update(api, "12345", "Active")
    ext = error_of(body)
    assert (ext["code"], ext["reason"]) == ("BAD_USER_INPUT", "INVALID_ID")


async def test_idempotent_replay_returns_first_result_and_changes_nothing(api, make_customer):
    # given a move made with an idempotency key
    cid = await make_customer()
    key = f"k-{uuid.uuid4().hex}"
    first = payload(await update(api, cid, "Onboarded", idempotencyKey=key))
    # and a later move without a key
    payload(await update(api, cid, "Active"))
    settled = await state(api, cid)
    # when the first request is replayed
    replay = payload(await update(api, cid, "Onboarded", idempotencyKey=key))
    # then it answers with the first transition and changes nothing
    assert replay["success"] is True
    assert replay["transition"]["id"] == first["transition"]["id"]
    assert replay["transition"]["toStage"] == "Onboarded"
    assert await state(api, cid) == settled


async def test_idempotency_key_reused_with_other_input(api, make_customer):
    cid = await make_customer()
    key = f"k-{uuid.uuid4().hex}"
    payload(await update(api, cid, "Onboarded", idempotencyKey=key))
    settled = await state(api, cid)
    # when the key is used again for a different move
    body = await update(api, cid, "Active", idempotencyKey=key)
    # then IDEMPOTENCY_KEY_REUSED and nothing changes
    ext = error_of(body)
    assert (ext["code"], ext["reason"]) == ("BAD_USER_INPUT", "IDEMPOTENCY_KEY_REUSED")
    assert await state(api, cid) == settled


async def test_failed_attempt_is_not_remembered_by_idempotency_key(api, make_customer):
    # given an attempt that failed (missing reason) under a key
    cid = await make_customer()
    key = f"k-{uuid.uuid4().hex}"
    assert error_of(await update(api, cid, "Churned", idempotencyKey=key))["reason"] == (
        "REASON_REQUIRED"
    )
    # when retried with the same key and a corrected input
    p = payload(await update(api, cid, "Churned", idempotencyKey=key, reasonCode="price"))
    # then it runs afresh
    assert p["customer"]["lifecycle"]["stage"] == "Churned"


async def test_allowed_next_stages_never_lists_current_stage(api, make_customer):
    cid = await make_customer()
    for stage in ["Onboarded", "Active", "At-Risk", "Churned", "Prospect"]:
        # when the customer is in each stage in turn
        p = payload(await update(api, cid, stage, reasonCode="r"))
        # then every other stage, and not the current one, is offered
        allowed = p["customer"]["lifecycle"]["allowedNextStages"]
        assert allowed == [s for s in DEFAULT_STAGES if s != stage], stage


# --- updateLifecycleStages (bulk) -------------------------------------------------------


async def test_bulk_mixes_successes_and_failures_in_input_order(api, make_customer):
    # given four customers
    ok1, no_reason, bad_stage, ok2 = [await make_customer() for _ in range(4)]
    missing = uuid.uuid4()
    inputs = [
        {"customerId": str(ok1), "stage": "Active"},
        {"customerId": str(no_reason), "stage": "At-Risk"},
        {"customerId": str(missing), "stage": "Active"},
        {"customerId": str(bad_stage), "stage": "Nirvana"},
        {"customerId": "not-a-uuid", "stage": "Active"},
        {"customerId": str(ok2), "stage": "Churned", "reasonCode": "price"},
    ]
    # when they are sent in one bulk call
    body = await api.gql(BULK, {"inputs": inputs})
    # then each result stands on its own, in input order
    assert "errors" not in body, body
    bulk = body["data"]["updateLifecycleStages"]
    assert (bulk["succeeded"], bulk["failed"]) == (2, 4)
    results = bulk["results"]
    assert [r["customerId"] for r in results] == [i["customerId"] for i in inputs]
    assert [r["success"] for r in results] == [True, False, False, False, False, True]
    errors = [(r["error"]["code"], r["error"]["reason"]) if r["error"] else None for r in results]
    assert errors == [
        None,
        ("BAD_USER_INPUT", "REASON_REQUIRED"),
        ("NOT_FOUND", None),
        ("BAD_USER_INPUT", "INVALID_STAGE"),
        ("BAD_USER_INPUT", "INVALID_ID"),
        None,
    ]
    assert all(r["error"]["message"] for r in results if r["error"])
    t1, t6 = results[0]["transition"], results[5]["transition"]
    assert (t1["fromStage"], t1["toStage"], t1["source"], t1["changedBy"]) == (
        "Prospect",
        "Active",
        "UI",
        api.sub,
    )
    assert (t6["toStage"], t6["reasonCode"]) == ("Churned", "price")
    assert all(r["transition"] is None for r in results[1:5])
    # and the stored stages agree
    stages = {
        c: (await state(api, c))["lifecycle"]["stage"] for c in (ok1, no_reason, bad_stage, ok2)
    }
    assert stages == {ok1: "Active", no_reason: "Prospect", bad_stage: "Prospect", ok2: "Churned"}


async def test_bulk_noop_item_succeeds_without_transition(api, make_customer):
    cid = await make_customer()
    body = await api.gql(BULK, {"inputs": [{"customerId": str(cid), "stage": "Prospect"}]})
    bulk = body["data"]["updateLifecycleStages"]
    assert (bulk["succeeded"], bulk["failed"]) == (1, 0)
    assert bulk["results"][0]["success"] is True
    assert bulk["results"][0]["transition"] is None


async def test_bulk_over_1000_inputs_is_too_many_items(api, make_customer):
    # given 1001 inputs for a real customer
    cid = await make_customer()
    before = await state(api, cid)
    inputs = [{"customerId": str(cid), "stage": "Active"}] * 1001
    # when sent as variables
    body = await api.gql(BULK, {"inputs": inputs})
    # then the whole call is refused with TOO_MANY_ITEMS and nothing changes
    ext = error_of(body)
    assert (ext["code"], ext["reason"]) == ("BAD_USER_INPUT", "TOO_MANY_ITEMS")
    assert body["data"] is None
    assert await state(api, cid) == before


async def test_a_negative_expected_version_is_malformed_as_on_rest(api, make_customer):
    cid = await make_customer()
    before = await state(api, cid)
    body = await update(api, cid, "Active", expectedVersion=-5)
    assert error_of(body)["code"] == "BAD_USER_INPUT"
    assert await state(api, cid) == before
