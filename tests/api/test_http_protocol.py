"""GraphQL over HTTP content negotiation, and what the logs may contain."""

from __future__ import annotations

import io
import json
import logging
import sys


async def test_graphql_response_json_gives_400_without_data_for_request_errors(api) -> None:
    h = api.headers(Accept="application/graphql-response+json")
    bad = await api.http.post("/graphql", json={"query": "{ viewer { nope } }"}, headers=h)
    assert bad.status_code == 400
    assert bad.headers["content-type"] == "application/graphql-response+json"
    body = bad.json()
    assert "data" not in body and body["errors"][0]["message"]
    ok = await api.http.post("/graphql", json={"query": "{ viewer { subject } }"}, headers=h)
    assert ok.status_code == 200
    assert ok.headers["content-type"] == "application/graphql-response+json"
    assert ok.json() == {"data": {"viewer": {"subject": api.sub}}}


async def test_field_errors_stay_200_under_graphql_response_json(api) -> None:
    h = api.headers(Accept="application/graphql-response+json")
    resp = await api.http.post(
        "/graphql", json={"query": '{ customer(id: "nope") { id } }'}, headers=h
    )
    assert resp.status_code == 200
    assert resp.json()["errors"][0]["extensions"]["reason"] == "INVALID_ID"


async def test_plain_json_clients_keep_200_and_application_json(api) -> None:
    resp = await api.http.post("/graphql", json={"query": "{ nope }"}, headers=api.headers())
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")


def test_logs_are_json_and_tracebacks_carry_no_locals(monkeypatch) -> None:
    from customer360.observability import configure_logging

    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    configure_logging("INFO")
    try:
        token = "eyJhbGciOi.secret-token"  # noqa: F841 - a local the traceback must not show
        raise RuntimeError("invalid input for query argument $1: 'ann@example.com'")
    except RuntimeError:
        logging.getLogger("strawberry.execution").exception("resolver failed")
    line = out.getvalue().strip().splitlines()[-1]
    doc = json.loads(line)
    assert doc["event"] == "resolver failed" and doc["level"] == "error"
    assert doc["exception"][0]["exc_type"] == "RuntimeError"
    assert "secret-token" not in line
    # nor the message, which a database driver fills with the offending value
    assert "ann@example.com" not in line
