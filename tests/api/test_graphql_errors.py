"""Error shapes, masking and document limits of the GraphQL endpoint."""

from __future__ import annotations

import json
from typing import Any

import graphql

CODES = {
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "NOT_FOUND",
    "BAD_USER_INPUT",
    "CONFLICT",
    "RATE_LIMITED",
    "INTERNAL_SERVER_ERROR",
}


async def post(api: Any, body: Any) -> tuple[int, dict[str, Any] | list[Any]]:
    resp = await api.http.post("/graphql", json=body, headers=api.headers())
    return resp.status_code, resp.json()


def depth_query(depth: int) -> str:
    """A valid introspection document whose deepest leaf sits at `depth` (root field = 1)."""
    assert depth >= 5
    inner = "name"
    for _ in range(depth - 5):
        inner = f"ofType {{ {inner} }}"
    return f"{{ __schema {{ types {{ fields {{ type {{ {inner} }} }} }} }} }}"


def alias_query(count: int) -> str:
    return "{ " + " ".join(f"a{i}: viewer {{ subject }}" for i in range(count)) + " }"


def messages(body: Any) -> str:
    return " ".join(e.get("message", "") for e in body.get("errors", []))


async def test_unknown_field_is_a_readable_validation_error(api):
    # when a document names a field the schema does not have
    status, body = await post(api, {"query": "{ customers { edges { node { bogusField } } } }"})
    # then the validation error says so (it is not masked)
    assert status in (200, 400)
    assert isinstance(body, dict)
    assert body.get("data") is None
    assert "bogusField" in messages(body)
    assert "Internal server error" not in messages(body)


async def test_bad_argument_is_a_readable_validation_error(api):
    status, body = await post(api, {"query": "{ customers(orderBy: SIDEWAYS) { totalCount } }"})
    assert status in (200, 400)
    assert isinstance(body, dict)
    assert "SIDEWAYS" in messages(body)


async def test_unexpected_failure_is_masked(api, make_customer):
    # given a search term PostgreSQL cannot store in a text parameter (a NUL character)
    await make_customer()
    query = "query($s: String) { customers(filter: {search: $s}) { totalCount } }"
    resp = await api.http.post(
        "/graphql", json={"query": query, "variables": {"s": "a\u0000b"}}, headers=api.headers()
    )
    # then whatever comes back leaks no internals
    text = resp.text
    for leak in ("Traceback", "asyncpg", "SELECT", "sqlalchemy", "0x00", 'File "'):
        assert leak not in text, leak
    body = resp.json()
    assert body.get("errors"), body
    # and each error carries one of the contract's codes (a masked one INTERNAL_SERVER_ERROR)
    for err in body["errors"]:
        assert (err.get("extensions") or {}).get("code") in CODES, err


async def test_depth_15_accepted_16_rejected(api):
    # when a document is exactly at the depth limit
    status, body = await post(api, {"query": depth_query(15)})
    # then it runs
    assert status == 200 and isinstance(body, dict)
    assert "errors" not in body, body
    assert body["data"]["__schema"]["types"]
    # and one level deeper is refused with a readable message
    status, body = await post(api, {"query": depth_query(16)})
    assert status in (200, 400)
    assert isinstance(body, dict)
    assert body.get("errors"), body
    assert body.get("data") is None
    assert "depth" in messages(body).lower()


async def test_standard_introspection_query_is_accepted(api):
    # when GraphiQL's standard introspection query is sent
    status, body = await post(api, {"query": graphql.get_introspection_query()})
    # then it is answered in full
    assert status == 200 and isinstance(body, dict)
    assert "errors" not in body, messages(body)
    names = {t["name"] for t in body["data"]["__schema"]["types"]}
    assert {"Query", "Mutation", "Customer", "LifecycleStatus"} <= names


async def test_15_aliases_accepted_16_rejected(api):
    status, body = await post(api, {"query": alias_query(15)})
    assert status == 200
    assert isinstance(body, dict)
    assert "errors" not in body, body
    assert len(body["data"]) == 15
    status, body = await post(api, {"query": alias_query(16)})
    assert status in (200, 400)
    assert isinstance(body, dict)
    assert body.get("errors"), body
    assert body.get("data") is None
    assert "alias" in messages(body).lower()


def stages_query(items: int) -> str:
    """About `items` + 20 tokens: a long list literal of stage names."""
    values = " ".join(['"Prospect"'] * items)
    return f"{{ customers(filter: {{stages: [{values}]}}) {{ totalCount }} }}"


async def test_token_limit_counts_the_document_not_the_variables(api, make_customer):
    await make_customer()
    # a document under 2,000 tokens runs
    status, body = await post(api, {"query": stages_query(1900)})
    assert status == 200
    assert isinstance(body, dict)
    assert "errors" not in body, messages(body)[:200]
    assert body["data"]["customers"]["totalCount"] == 1
    # one over 2,000 tokens is refused readably
    status, body = await post(api, {"query": stages_query(2100)})
    assert status in (200, 400)
    assert isinstance(body, dict)
    assert body.get("errors") and body.get("data") is None
    assert "token" in messages(body).lower()
    # and large variables do not count as tokens
    query = "query($s: [String!]) { customers(filter: {stages: $s}) { totalCount } }"
    status, body = await post(api, {"query": query, "variables": {"s": ["Prospect"] * 5000}})
    assert status == 200
    assert isinstance(body, dict)
    assert "errors" not in body, body
    assert body["data"]["customers"]["totalCount"] == 1


async def test_mutation_over_get_is_refused(api, make_customer):
    # given a customer
    cid = await make_customer()
    mutation = (
        f'mutation {{ updateLifecycleStage(input: {{customerId: "{cid}", stage: "Active"}}) '
        "{ success } }"
    )
    # when the mutation is sent with GET
    resp = await api.http.get("/graphql", params={"query": mutation}, headers=api.headers())
    # then it is refused and nothing changes
    assert 400 <= resp.status_code < 500
    check = await api.gql(f'{{ customer(id: "{cid}") {{ lifecycle {{ stage }} }} }}')
    assert check["data"]["customer"]["lifecycle"]["stage"] == "Prospect"
    # while a query over GET works
    resp = await api.http.get(
        "/graphql", params={"query": "{ viewer { subject } }"}, headers=api.headers()
    )
    assert resp.status_code == 200
    assert resp.json()["data"]["viewer"]["subject"] == api.sub


async def test_batching_is_refused(api):
    # when two operations are sent as a JSON array
    resp = await api.http.post(
        "/graphql",
        content=json.dumps([{"query": "{ viewer { subject } }"}] * 2),
        headers={**api.headers(), "Content-Type": "application/json"},
    )
    # then the request is refused and nothing is executed
    assert 400 <= resp.status_code < 500
    assert "user-1" not in resp.text


async def test_expected_errors_are_not_logged_with_the_documents_personal_data(api, caplog) -> None:
    # given a document carrying an email literal that fails validation
    caplog.set_level("DEBUG")
    body = await api.gql('{ customers(filter: {search: "secret.person@example.com"}) { nope } }')
    # then the client hears why, and no log line repeats the document
    assert "nope" in body["errors"][0]["message"]
    assert "secret.person@example.com" not in caplog.text
