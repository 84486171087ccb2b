"""What every POST /graphql passes through before and after GraphQL: CORS, HSTS, the request
metrics, the 1 MiB body limit and the 500 handler, pinned header by header (the hot path
answers these requests without Starlette's middleware stack, so nothing else pins them)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from customer360.app import create_app
from customer360.gql import view
from customer360.observability import REGISTRY
from customer360.tls import HSTS, server_options
from tests.conftest import make_token, run_server

APP = "http://app.example"
ELSEWHERE = "http://evil.example"
QUERY = {"query": "{ viewer { subject } }"}
OVER_TLS = {"X-Forwarded-Proto": "https"}  # from a listed proxy: as if served over TLS
EXPOSED = ("access-control-expose-headers", "ETag, Retry-After")
# What CORS adds for a listed origin, and HSTS after it over TLS, in the order they are sent.
CORS = [EXPOSED, ("access-control-allow-origin", APP), ("vary", "Origin")]
CORS_OVER_TLS = [*CORS, ("strict-transport-security", HSTS)]
# What the server adds to every answer, whatever the application says.
SERVER_HEADERS = {"date", "server"}


@contextlib.asynccontextmanager
async def gateway(settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    edge = settings.model_copy(
        update={"allowed_origins": [APP], "tls_proxy": ["127.0.0.1"], "kafka_bootstrap": "off"}
    )
    async with (
        run_server(create_app(edge), **server_options(edge)) as url,
        httpx.AsyncClient(base_url=url, timeout=30) as http,
    ):
        yield http


def headers(resp: httpx.Response) -> list[tuple[str, str]]:
    return [(k, v) for k, v in resp.headers.multi_items() if k not in SERVER_HEADERS]


def length(resp: httpx.Response) -> tuple[str, str]:
    return ("content-length", str(len(resp.content)))


def requests_counted(status: int, method: str = "POST") -> float:
    labels = {"method": method, "route": "/graphql", "status": str(status)}
    return REGISTRY.get_sample_value("c360_http_requests_total", labels) or 0.0


def durations_observed(method: str = "POST") -> float:
    labels = {"method": method, "route": "/graphql"}
    return REGISTRY.get_sample_value("c360_http_request_duration_seconds_count", labels) or 0.0


@contextlib.contextmanager
def counted(status: int) -> Iterator[None]:
    """The block's requests are counted once each, under their status, and timed."""
    before, timed = requests_counted(status), durations_observed()
    yield
    assert requests_counted(status) == before + 1
    assert durations_observed() == timed + 1


async def test_a_query_from_a_listed_origin_over_tls_gets_cors_and_hsts_and_is_counted(
    settings, tenant
) -> None:
    auth = {"Authorization": f"Bearer {make_token('u-1', tenant)}"}
    async with gateway(settings) as http:
        with counted(200):
            resp = await http.post("/graphql", json=QUERY, headers={"Origin": APP, **auth})
        with counted(200):
            tls = await http.post(
                "/graphql", json=QUERY, headers={"Origin": APP, **auth, **OVER_TLS}
            )
    for answer in (resp, tls):
        assert answer.status_code == 200
        assert answer.json() == {"data": {"viewer": {"subject": "u-1"}}}
    plain = [length(resp), ("content-type", "application/json")]
    assert headers(resp) == [*plain, *CORS]
    assert headers(tls) == [*plain, *CORS_OVER_TLS]


async def test_a_query_from_an_origin_not_listed_gets_vary_only(settings, tenant) -> None:
    auth = {"Authorization": f"Bearer {make_token('u-1', tenant)}"}
    async with gateway(settings) as http:
        with counted(200):
            resp = await http.post(
                "/graphql", json=QUERY, headers={"Origin": ELSEWHERE, **auth, **OVER_TLS}
            )
        with counted(200):
            same_origin = await http.post("/graphql", json=QUERY, headers=auth)
    assert resp.status_code == 200 and same_origin.status_code == 200
    assert headers(resp) == [
        length(resp),
        ("content-type", "application/json"),
        ("vary", "Origin"),
        ("strict-transport-security", HSTS),
    ]
    # no Origin, no TLS: nothing added at all
    assert headers(same_origin) == [length(same_origin), ("content-type", "application/json")]


async def test_graphql_response_json_answers_carry_the_same_headers(settings, tenant) -> None:
    auth = {"Authorization": f"Bearer {make_token('u-1', tenant)}"}
    accept = {"Accept": "application/graphql-response+json"}
    async with gateway(settings) as http:
        with counted(400):
            bad = await http.post(
                "/graphql",
                json={"query": "{ viewer { nope } }"},
                headers={"Origin": APP, **auth, **accept, **OVER_TLS},
            )
    assert bad.status_code == 400 and "data" not in bad.json()
    assert headers(bad) == [
        ("content-type", "application/graphql-response+json"),
        length(bad),
        *CORS_OVER_TLS,
    ]


async def test_a_refused_token_from_a_listed_origin_is_readable_and_counted(settings) -> None:
    async with gateway(settings) as http:
        with counted(401):
            resp = await http.post(
                "/graphql",
                json=QUERY,
                headers={"Origin": APP, "Authorization": "Bearer nope", **OVER_TLS},
            )
    assert resp.status_code == 401
    assert resp.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert headers(resp) == [
        ("www-authenticate", 'Bearer error="invalid_token"'),
        length(resp),
        ("content-type", "application/json"),
        *CORS_OVER_TLS,
    ]


def too_big() -> bytes:
    return b'{"query": "{ viewer { subject } }", "x": "' + b"x" * (1024 * 1024) + b'"}'


async def chunks() -> AsyncIterator[bytes]:
    body = too_big()
    for start in range(0, len(body), 64 * 1024):
        yield body[start : start + 64 * 1024]


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_body_over_one_mib_is_413_with_cors_and_counted(settings, tenant, declared) -> None:
    sent: dict[str, str] = {
        "Origin": APP,
        "Authorization": f"Bearer {make_token('u-1', tenant)}",
        "Content-Type": "application/json",
        **OVER_TLS,
    }
    async with gateway(settings) as http:
        with counted(413):
            resp = await http.post(
                "/graphql", content=too_big() if declared else chunks(), headers=sent
            )
    assert resp.status_code == 413
    assert resp.json() == {
        "errors": [{"message": "Request body over 1 MiB", "extensions": {"code": "BAD_USER_INPUT"}}]
    }
    assert headers(resp) == [
        length(resp),
        ("content-type", "application/json"),
        *CORS_OVER_TLS,
    ]


async def test_an_unexpected_failure_is_a_masked_500_and_counted(
    settings, tenant, monkeypatch
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("SELECT secret FROM somewhere")

    monkeypatch.setattr(view, "authenticate", broken)
    auth = {"Authorization": f"Bearer {make_token('u-1', tenant)}"}
    async with gateway(settings) as http:
        with counted(500):
            resp = await http.post(
                "/graphql", json=QUERY, headers={"Origin": APP, **auth, **OVER_TLS}
            )
    assert resp.status_code == 500
    assert resp.json() == {
        "errors": [
            {"message": "Internal server error", "extensions": {"code": "INTERNAL_SERVER_ERROR"}}
        ]
    }
    # As ever: the 500 comes from the outermost error handler, outside CORS and HSTS.
    assert headers(resp) == [length(resp), ("content-type", "application/json")]


async def test_other_methods_on_graphql_keep_their_answers(settings, tenant) -> None:
    async with gateway(settings) as http:
        put = await http.put("/graphql", json=QUERY, headers={"Origin": APP})
        preflight = await http.options(
            "/graphql",
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
    assert put.status_code == 405 and put.headers["allow"]
    assert put.headers["access-control-allow-origin"] == APP
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == APP
