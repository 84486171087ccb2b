"""Compiled mutations: the stage changes answered without strawberry's per-field execution,
written once whoever answers.

In `verify` mode (the suite's) strawberry answers every compiled mutation a second time,
from the outcome the compiled path kept (once.py), and conftest fails the test on any
difference: every mutation the suite sends is a differential test that writes once.
"""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import strategies as st
from hypothesis_graphql import mutations, nodes

from customer360.gql.fastpath import COMPILED
from customer360.gql.schema import build_schema
from customer360.lifecycle import DEFAULT_CONFIG
from tests.conftest import Api
from tests.helpers import examples

PAYLOAD = """
  __typename success updatedAt
  transition { __typename id customerId fromStage toStage changedAt changedBy reasonCode source }
  customer { id name lifecycle { stage version allowedNextStages } }
"""
SINGLE = "mutation($i: UpdateLifecycleStageInput!) { updateLifecycleStage(input: $i) {%s} }"
BULK = (
    "mutation($inputs: [UpdateLifecycleStageInput!]!) { updateLifecycleStages(inputs: $inputs) "
    "{ succeeded failed results { customerId success transition { toStage } "
    "error { code reason message retryAfter } } } }"
)
HISTORY = "query($id: ID!) { customer(id: $id) { lifecycleHistory(first: 50) { totalCount } } }"


def _answered() -> dict[str, float]:
    return {p: COMPILED.labels(p)._value.get() for p in ("compiled", "strawberry")}


async def _history(api: Api, cid: Any) -> int:
    body = await api.gql(HISTORY, {"id": str(cid)})
    return int(body["data"]["customer"]["lifecycleHistory"]["totalCount"])


async def test_a_stage_change_is_compiled_and_written_once(api: Api, make_customer: Any) -> None:
    # given a customer in its first stage
    cid = await make_customer(name="Dora")
    rows = await _history(api, cid)
    before = _answered()
    # when a client moves it, asking for the whole payload
    body = await api.gql(SINGLE % PAYLOAD, {"i": {"customerId": str(cid), "stage": "Onboarded"}})
    # then the compiled path answered (strawberry agreed, from the kept outcome)
    assert _answered()["compiled"] == before["compiled"] + 1
    out = body["data"]["updateLifecycleStage"]
    assert out["transition"]["toStage"] == "Onboarded"
    lifecycle = out["customer"]["lifecycle"]
    assert (lifecycle["stage"], lifecycle["version"]) == ("Onboarded", 2)
    # and one change was written, not one per execution
    assert await _history(api, cid) == rows + 1


async def test_a_bulk_change_with_refused_items_is_compiled(api: Api, make_customer: Any) -> None:
    # given two customers and an id nobody has
    a, b = await make_customer(name="Ed"), await make_customer(name="Flo")
    rows = await _history(api, a)
    inputs = [
        {"customerId": str(a), "stage": "Onboarded"},
        {"customerId": str(uuid.uuid4()), "stage": "Onboarded"},
        {"customerId": str(b), "stage": "NoSuchStage"},
        {"customerId": "not-a-uuid", "stage": "Onboarded"},
    ]
    before = _answered()
    # when they are changed in one call
    body = await api.gql(BULK, {"inputs": inputs})
    assert body.get("data"), body
    res = body["data"]["updateLifecycleStages"]
    # then each refusal is data, answered by the compiled path, and a moved once
    assert _answered()["compiled"] == before["compiled"] + 1
    assert (res["succeeded"], res["failed"]) == (1, 3)
    assert [r["error"] and r["error"]["code"] for r in res["results"]] == [
        None,
        "NOT_FOUND",
        "BAD_USER_INPUT",
        "BAD_USER_INPUT",
    ]
    assert await _history(api, a) == rows + 1


async def test_when_strawberry_answers_after_a_write_it_does_not_write_again(
    api: Api, make_customer: Any
) -> None:
    # given a document whose first change succeeds (at version 1 only) and whose second fails
    cid = await make_customer(name="Gus")
    doc = (
        "mutation($a: UpdateLifecycleStageInput!, $b: UpdateLifecycleStageInput!) { "
        "first: updateLifecycleStage(input: $a) { transition { toStage } } "
        "second: updateLifecycleStage(input: $b) { success } }"
    )
    variables = {
        "a": {"customerId": str(cid), "stage": "Onboarded", "expectedVersion": 1},
        "b": {"customerId": str(uuid.uuid4()), "stage": "Onboarded"},
    }
    rows = await _history(api, cid)
    before = _answered()
    # when it is sent: the compiled path writes the first, then cannot report the error
    resp = await api.http.post(
        "/graphql", json={"query": doc, "variables": variables}, headers=api.headers()
    )
    body = resp.json()
    # then strawberry answers, with the first change's own outcome: run again, it would
    # have failed with CONFLICT (the customer is at version 2 by then)
    assert _answered()["strawberry"] == before["strawberry"] + 1
    assert body["data"] is None  # the payloads are non-null: the error nulls the root
    assert [(e["path"], e["extensions"]["code"]) for e in body["errors"]] == [
        (["second"], "NOT_FOUND")
    ]
    # and the change was written once
    assert await _history(api, cid) == rows + 1


async def test_each_request_keeps_its_own_outcomes(api: Api, make_customer: Any) -> None:
    """The same document in two requests: two changes (the memo is the request's)."""
    a = await make_customer(name="Hal")
    rows = await _history(api, a)
    for stage in ("Onboarded", "Active"):
        body = await api.gql(
            SINGLE % "transition { toStage }", {"i": {"customerId": str(a), "stage": stage}}
        )
        assert body["data"]["updateLifecycleStage"]["transition"]["toStage"] == stage
    assert await _history(api, a) == rows + 2


async def test_a_mutation_not_marked_to_run_once_is_strawberrys(api: Api) -> None:
    """configureLifecycleStages has no RunsOnce: in verify mode strawberry would save it a
    second time after the compiled path, so the compiled path leaves it alone."""
    doc = (
        "mutation($input: LifecycleStageConfigInput!) { "
        "configureLifecycleStages(input: $input) { version } }"
    )
    stages = {"input": {"stages": ["Prospect", "Onboarded", "Active", "Churned"]}}
    admin = api.as_("ROLE_TENANT_ADMIN", sub="admin-1")
    before = _answered()
    first = (await admin.gql(doc, stages))["data"]["configureLifecycleStages"]["version"]
    second = (await admin.gql(doc, stages))["data"]["configureLifecycleStages"]["version"]
    assert second == first + 1  # one save per request
    assert _answered()["compiled"] == before["compiled"]


def _generated_mutations(count: int, ids: list[str], fields: list[str]) -> list[str]:
    """Stage changes hypothesis-graphql derives from the schema: ids that exist (and one
    that does not), stages of the tenant's and others, every selection of the payloads."""
    schema = build_schema().as_str()
    scalars = {
        "ID": st.sampled_from(ids).map(nodes.String),
        # stages (and reason codes, idempotency keys) mostly of the tenant's: real moves
        "String": st.sampled_from([*DEFAULT_CONFIG.stages, "NoSuchStage", ""]).map(nodes.String),
        "Int": st.integers(0, 3).map(nodes.Int),
        "DateTime": st.sampled_from(["2000-01-01T00:00:00+00:00"]).map(nodes.String),
    }
    return examples(mutations(schema, fields=fields, custom_scalars=scalars), count)


async def test_generated_stage_changes_agree_with_strawberry(api: Api, make_customer: Any) -> None:
    """Each is answered by the compiled path (or by strawberry, for an error), and in the
    suite's verify mode strawberry answers it again from the kept outcome: conftest fails
    the test on any difference, so a change written twice would show."""
    ids = [str(await make_customer(name=f"Gen {k}")) for k in range(3)] + [str(uuid.uuid4())]
    bulk = _generated_mutations(40, ids, ["updateLifecycleStages"])
    mixed = _generated_mutations(30, ids, ["updateLifecycleStage", "updateLifecycleStages"])
    before = _answered()
    for document in bulk:
        resp = await api.http.post("/graphql", json={"query": document}, headers=api.headers())
        assert resp.status_code == 200, resp.text
    # the bulk mutation answers each refusal as data: most of them are compiled
    compiled = _answered()["compiled"] - before["compiled"]
    assert compiled >= len(bulk) // 2, compiled
    # (single changes with generated stages mostly fail: strawberry reports those, from the
    # outcomes the compiled path kept for every root field it had run)
    for document in mixed:
        resp = await api.http.post("/graphql", json={"query": document}, headers=api.headers())
        assert resp.status_code == 200, resp.text
