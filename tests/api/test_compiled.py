"""The compiled query path answers byte for byte as strawberry does (the reference).

The suite runs the gateway with `C360_GRAPHQL_COMPILED=verify`: every query a test sends is
answered by the compiled path and by strawberry with one clock, and `check_compiled`
(conftest) fails the test on any difference. Here: documents chosen to reach every corner
(fragments, aliases, directives, nested loaders, pagination, errors), documents generated
from the schema, and proof that the compiled path really answered the ones it should.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis_graphql import nodes, queries

from customer360.gql.fastpath import COMPILED
from customer360.gql.schema import build_schema
from tests.conftest import Api
from tests.helpers import apply_event, examples, renewed_event

CUSTOMER_FIELDS = """
  id tenantId name email phone companyName tier tags assignedTo createdAt updatedAt
  lifecycle { id stage enteredAt updatedAt updatedBy reasonCode source version allowedNextStages }
"""

DOCUMENTS: list[tuple[str, dict[str, Any]]] = [
    # the benchmark's S1 and S2, and the summary (S3)
    (
        "query($id: ID!) { customer(id: $id) { name companyName tier "
        "lifecycle { stage enteredAt version } } }",
        {"id": "{a}"},
    ),
    (
        "{ customers(first: 50) { edges { node { id name companyName tier email "
        "lifecycle { stage enteredAt } } } } }",
        {},
    ),
    ("{ lifecycleSummary { total stages { stage count } generatedAt __typename } }", {}),
    # every field of a customer, the way Apollo sends it (__typename everywhere)
    (
        "query One($id: ID!) { __typename customer(id: $id) { __typename " + CUSTOMER_FIELDS + " "
        "metrics { __typename openSupportIssues closedSupportIssues lastSupportIssueClosedAt "
        "contractRenewalCount lastContractRenewedAt daysInStage } "
        "stageDurations { stage entries firstEnteredAt lastEnteredAt lastExitedAt totalSeconds } "
        "lifecycleHistory(first: 2) { totalCount pageInfo { hasNextPage hasPreviousPage "
        "startCursor endCursor } edges { cursor node { id customerId fromStage toStage "
        "changedAt changedBy reasonCode source __typename } } } "
        'now: stageAt(asOf: "2999-01-01T00:00:00Z") '
        'before: stageAt(asOf: "2000-01-01T00:00:00") } }',
        {"id": "{a}"},
    ),
    # every field of a customer in a page: each reads only the columns it declares
    # (projection.py; conftest fails the test on a field that reads one it does not)
    (
        "{ customers(first: 3) { __typename totalCount pageInfo { endCursor } "
        "edges { __typename cursor node { __typename ...Row " + CUSTOMER_FIELDS + " "
        "metrics { openSupportIssues contractRenewalCount lastContractRenewedAt daysInStage } "
        "stageDurations { stage entries totalSeconds } "
        "lifecycleHistory(first: 1) { totalCount edges { node { id toStage } } } "
        'now: stageAt(asOf: "2999-01-01T00:00:00Z") } } } } '
        "fragment Row on Customer { lifecycle { ... on LifecycleStatus { version } } }",
        {},
    ),
    # fragments, inline fragments, aliases, the same key merged, directives
    (
        "query($id: ID!, $more: Boolean!, $less: Boolean!) { "
        "x: customer(id: $id) { ...Who ... on Customer { lifecycle { stage } } "
        "lifecycle { version } email @include(if: $more) phone @skip(if: $less) "
        "tags @skip(if: true) } "
        "y: customer(id: $id) @include(if: $more) { ...Who } "
        'missing: customer(id: "00000000-0000-0000-0000-000000000000") { id } } '
        "fragment Who on Customer { id name ... { companyName } }",
        {"id": "{a}", "more": True, "less": False},
    ),
    (
        "query($id: ID!, $more: Boolean!, $less: Boolean!) { "
        "x: customer(id: $id) { id email @include(if: $more) phone @skip(if: $less) } }",
        {"id": "{a}", "more": False, "less": True},
    ),
    # lists: each filter, each ordering, a second page, the count
    (
        "query($f: CustomerFilter, $o: CustomerOrder, $after: String) { "
        "customers(filter: $f, orderBy: $o, first: 2, after: $after) { totalCount "
        "pageInfo { hasNextPage hasPreviousPage startCursor endCursor } "
        "edges { cursor node { id name lifecycle { stage } metrics { contractRenewalCount } } } "
        "} }",
        {"f": {"stage": "Active"}, "o": "NAME_ASC"},
    ),
    (
        '{ customers(filter: {tier: PRO, tag: "vip", stages: ["Prospect", "Active"]}, '
        "orderBy: STAGE_ENTERED_AT_DESC) { edges { node { name } } } }",
        {},
    ),
    ('{ customers(filter: {search: "acme"}, orderBy: UPDATED_AT_DESC) { totalCount } }', {}),
    ("{ customers(first: 0) { edges { cursor } pageInfo { endCursor } } }", {}),
    # the rest of the query root
    (
        "{ viewer { id subject tenantId roles permissions __typename } "
        "lifecycleStageConfig { id stages requiredReasonCodes initialStage version updatedAt "
        "updatedBy transitions { from to } eventRules { eventType toStage } } }",
        {},
    ),
    (
        "query A { viewer { subject } } query B { lifecycleSummary { total } }",
        {},
    ),
]

# Answered by strawberry: errors are the reference's to report, introspection is not compiled.
FALLBACKS: list[tuple[str, dict[str, Any], str | None]] = [
    ('{ customer(id: "not-a-uuid") { id } }', {}, "BAD_USER_INPUT"),
    ('{ customers(filter: {stage: "Nope"}) { totalCount } }', {}, "BAD_USER_INPUT"),
    ('{ customers(after: "garbage") { totalCount } }', {}, "BAD_USER_INPUT"),
    ("{ customers(first: 500) { totalCount } }", {}, "BAD_USER_INPUT"),
    ("query($id: ID!) { customer(id: $id) { id } }", {}, "*"),  # no variable: a request error
    ("{ __schema { queryType { name } } lifecycleSummary { total } }", {}, None),
    ("{ nope }", {}, "*"),  # a validation error
]


@pytest.fixture
async def tenant_data(api: Api, make_customer: Any, engine: Any) -> dict[str, str]:
    a = await make_customer(name="Alice", company_name="Acme Corp", tags=["vip"])
    b = await make_customer(name="Bob", company_name="Bobco", tier="FREE", tags=[])
    c = await make_customer(name="Carol", company_name="Acme Labs")
    for cid, stage in [(a, "Onboarded"), (a, "Active"), (b, "Active"), (c, "Onboarded")]:
        assert (await api.patch(cid, {"stage": stage})).status_code == 200
    await apply_event(engine, renewed_event(api.tenant, a))
    return {"a": str(a), "b": str(b), "c": str(c)}


def _fill(variables: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    return {
        k: ids[v[1:-1]] if isinstance(v, str) and v.startswith("{") and v.endswith("}") else v
        for k, v in variables.items()
    }


def _answered() -> dict[str, float]:
    return {p: COMPILED.labels(p)._value.get() for p in ("compiled", "strawberry")}


@pytest.mark.parametrize(("query", "variables"), DOCUMENTS)
async def test_the_compiled_path_answers_these_exactly_as_strawberry(
    api: Api, tenant_data: dict[str, str], query: str, variables: dict[str, Any]
) -> None:
    before = _answered()
    operation = "B" if "query B" in query else None
    resp = await api.http.post(
        "/graphql",
        json={
            "query": query,
            "variables": _fill(variables, tenant_data),
            "operationName": operation,
        },
        headers=api.headers(),
    )
    assert resp.status_code == 200
    body = resp.json()
    assert "errors" not in body and body["data"], body
    # answered by the compiled path (verify mode compared it with strawberry's answer)
    assert _answered()["compiled"] == before["compiled"] + 1


async def test_a_second_page_continues_where_the_first_ended(
    api: Api, tenant_data: dict[str, str]
) -> None:
    doc = (
        "query($after: String) { customers(first: 2, orderBy: NAME_ASC, after: $after) "
        "{ edges { node { name } } pageInfo { endCursor hasNextPage hasPreviousPage } } }"
    )
    first = (await api.gql(doc))["data"]["customers"]
    second = (await api.gql(doc, {"after": first["pageInfo"]["endCursor"]}))["data"]["customers"]
    names = [e["node"]["name"] for e in first["edges"] + second["edges"]]
    assert names == ["Alice", "Bob", "Carol"]
    assert second["pageInfo"]["hasPreviousPage"] is True


@pytest.mark.parametrize(("query", "variables", "code"), FALLBACKS)
async def test_errors_and_introspection_are_strawberrys_to_answer(
    api: Api, tenant_data: dict[str, str], query: str, variables: dict[str, Any], code: str | None
) -> None:
    before = _answered()
    resp = await api.http.post(
        "/graphql", json={"query": query, "variables": variables}, headers=api.headers()
    )
    body = resp.json()
    if code is None:
        assert "errors" not in body
    elif code == "*":
        assert body["errors"] and body.get("data") is None
    else:
        assert body["errors"][0]["extensions"]["code"] == code
    assert _answered()["compiled"] == before["compiled"]


async def test_permissions_hold_on_the_compiled_path(api: Api, tenant_data: dict[str, str]) -> None:
    """A viewer without VIEW_HISTORY gets strawberry's FORBIDDEN, with its path and the
    customer nulled as the schema says; the parts it may see are compiled."""
    viewer = api.as_("ROLE_CUSTOMER_VIEWER")
    doc = "query($id: ID!) { customer(id: $id) { name stageDurations { stage } } }"
    body = await viewer.gql(doc, {"id": tenant_data["a"]})
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert body["errors"][0]["path"] == ["customer", "stageDurations"]
    assert body["data"] == {"customer": None}
    before = _answered()
    body = await viewer.gql(
        "query($id: ID!) { customer(id: $id) { name } }", {"id": tenant_data["a"]}
    )
    assert body["data"]["customer"]["name"] == "Alice"
    assert _answered()["compiled"] == before["compiled"] + 1


def _generated(count: int, ids: list[str]) -> list[str]:
    """Queries hypothesis-graphql derives from the schema, with ids that exist."""
    schema = build_schema().as_str()
    scalars = {
        "ID": st.sampled_from(ids).map(nodes.String),
        "DateTime": st.sampled_from(["2000-01-01T00:00:00+00:00", "2999-01-01T00:00:00"]).map(
            nodes.String
        ),
    }
    return examples(queries(schema, custom_scalars=scalars), count)


async def test_generated_documents_agree_with_strawberry(
    api: Api, tenant_data: dict[str, str]
) -> None:
    ids = [*tenant_data.values(), str(uuid.uuid4())]
    queries = _generated(120, ids)
    # A tenant admin may read every root field (the export log and webhooks are admins' only)
    admin = api.as_("ROLE_TENANT_ADMIN")
    before = _answered()
    for query in queries:
        resp = await api.http.post("/graphql", json={"query": query}, headers=admin.headers())
        assert resp.status_code in (200, 400), resp.text
    # enough of them reached the compiled path to mean something (the rest: errors)
    assert _answered()["compiled"] - before["compiled"] >= len(queries) // 4
