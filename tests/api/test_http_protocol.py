"""GraphQL over HTTP content negotiation, and what the logs may contain."""

from __future__ import annotations

import asyncio
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


async def test_transport_errors_are_graphql_responses_a_client_can_read(api) -> None:
    # given a body that is not JSON, under either media type a client may prefer
    for accept, media in (
        ("application/json", "application/json"),
        ("application/graphql-response+json", "application/graphql-response+json"),
    ):
        h = api.headers(Accept=accept, **{"Content-Type": "application/json"})
        resp = await api.http.post("/graphql", content=b"{not json", headers=h)
        # then 400 with a GraphQL error body in the media type it says it is
        assert resp.status_code == 400
        assert resp.headers["content-type"].startswith(media)
        (error,) = resp.json()["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT" and error["message"]
    # and a mutation over GET is 405 naming the methods that work
    resp = await api.http.get(
        "/graphql", params={"query": "mutation { __typename }"}, headers=api.headers()
    )
    assert resp.status_code == 405, resp.text
    assert "POST" in resp.headers["allow"]
    assert resp.json()["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


SUBSCRIPTION = 'subscription { lifecycleChanged(stage: "At-Risk") { entered cursor } }'


async def test_a_subscription_over_http_is_refused_with_where_it_is_served(api) -> None:
    # given a subscription document, as GraphiQL or an Apollo link sends it by mistake
    requests = [
        api.http.post("/graphql", json={"query": SUBSCRIPTION}, headers=api.headers()),
        api.http.get("/graphql", params={"query": SUBSCRIPTION}, headers=api.headers()),
        # Apollo's multipart subscription request
        api.http.post(
            "/graphql",
            json={"query": SUBSCRIPTION},
            headers=api.headers(Accept="multipart/mixed;subscriptionSpec=1.0, application/json"),
        ),
        # one subscription among other operations, picked by name
        api.http.post(
            "/graphql",
            json={
                "query": "query Q { viewer { subject } } "
                + SUBSCRIPTION.replace("subscription", "subscription S", 1),
                "operationName": "S",
            },
            headers=api.headers(),
        ),
    ]
    for request in requests:
        resp = await request
        # then 400 BAD_USER_INPUT pointing at the WebSocket, never an internal error
        assert resp.status_code == 400, resp.text
        (error,) = resp.json()["errors"]
        assert error["extensions"]["code"] == "BAD_USER_INPUT"
        assert "WebSocket" in error["message"] and "graphql-transport-ws" in error["message"]


async def test_an_idle_keep_alive_connection_outlasts_the_clients_pool(settings) -> None:
    """httpx drops a pooled connection after 5 s idle, proxies after 60 s: a server that
    closed first would reset the request a client sends on it at that moment."""
    from customer360.app import create_app
    from customer360.tls import server_options
    from tests.conftest import run_server

    served = settings.model_copy(update={"kafka_bootstrap": "off"})
    async with run_server(create_app(served), **server_options(served)) as url:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        request = f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
        try:
            for idle in (0, 6):  # 6 s: past uvicorn's default of 5 s
                await asyncio.sleep(idle)
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                assert head.startswith(b"HTTP/1.1 200"), head
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                await reader.readexactly(length)
        finally:
            writer.close()
