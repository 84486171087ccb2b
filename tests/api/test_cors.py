"""Browser apps on other origins: CORS from C360_ALLOWED_ORIGINS, over real HTTP and in
headless Chromium (a page on another origin queries, mutates and subscribes)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.responses import HTMLResponse
from starlette.routing import Route

from customer360.app import create_app
from tests.conftest import make_token, run_server
from tests.helpers import CLIENTS, run_node

APP = "http://app.example"
ELSEWHERE = "http://evil.example"


@contextlib.asynccontextmanager
async def gateway(settings: Any, origins: list[str]) -> AsyncIterator[httpx.AsyncClient]:
    allowed = settings.model_copy(update={"allowed_origins": origins, "kafka_bootstrap": "off"})
    async with (
        run_server(create_app(allowed)) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        yield http


def cors_headers(resp: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in resp.headers.items() if k.startswith("access-control-")}


async def test_preflights_from_a_listed_origin_allow_what_the_api_reads(settings, tenant) -> None:
    async with gateway(settings, [APP]) as http:
        graphql = await http.options(
            "/graphql",
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type, x-tenant-id",
            },
        )
        rest = await http.options(
            "/api/v1/customers/00000000-0000-0000-0000-000000000000/lifecycle",
            headers={
                "Origin": APP,
                "Access-Control-Request-Method": "PATCH",
                "Access-Control-Request-Headers": (
                    "authorization,content-type,idempotency-key,if-match"
                ),
            },
        )
    for resp in (graphql, rest):
        assert resp.status_code == 200, resp.text
        h = cors_headers(resp)
        assert h["access-control-allow-origin"] == APP
        assert {"GET", "POST", "PATCH"} <= set(h["access-control-allow-methods"].split(", "))
        allowed = {x.strip().lower() for x in h["access-control-allow-headers"].split(",")}
        wanted = {"authorization", "content-type", "x-tenant-id", "idempotency-key", "if-match"}
        assert wanted <= allowed
        assert "access-control-allow-credentials" not in h


async def test_answers_to_a_listed_origin_expose_etag_and_retry_after(
    settings, tenant, make_customer
) -> None:
    cid = await make_customer(tenant)
    token = make_token("u-1", tenant)
    async with gateway(settings, [APP]) as http:
        resp = await http.get(
            f"/api/v1/customers/{cid}/lifecycle",
            headers={"Origin": APP, "Authorization": f"Bearer {token}"},
        )
        refused = await http.post(
            "/graphql", json={"query": "{ viewer { subject } }"}, headers={"Origin": APP}
        )
    assert resp.status_code == 200 and resp.headers["etag"] == '"1"'
    h = cors_headers(resp)
    assert h["access-control-allow-origin"] == APP
    assert {"etag", "retry-after"} <= {
        x.strip().lower() for x in h["access-control-expose-headers"].split(",")
    }
    # a 401 is readable by the app too (it can ask the user to sign in again)
    assert (
        refused.status_code == 401 and cors_headers(refused)["access-control-allow-origin"] == APP
    )


async def test_an_origin_not_listed_gets_no_cors_headers_at_all(settings, tenant) -> None:
    token = make_token("u-1", tenant)
    async with gateway(settings, [APP]) as http:
        preflight = await http.options(
            "/graphql",
            headers={
                "Origin": ELSEWHERE,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        simple = await http.post(
            "/graphql",
            json={"query": "{ viewer { subject } }"},
            headers={"Origin": ELSEWHERE, "Authorization": f"Bearer {token}"},
        )
    assert preflight.status_code == 400
    assert cors_headers(preflight) == {}
    assert cors_headers(simple) == {}


PAGE = (CLIENTS / "cross-origin.html").read_text()


@pytest.mark.parametrize("listed", [True, False], ids=["listed", "not-listed"])
async def test_a_page_on_another_origin_in_chromium(
    node_clients, settings, tenant, make_customer, listed
) -> None:
    if not shutil.which("chromium") and not os.path.exists("/usr/bin/chromium"):
        pytest.fail("Chromium is needed: apt-get install chromium (.ci/run installs it)")
    cid = await make_customer(tenant)
    page_app = Starlette(routes=[Route("/", lambda request: HTMLResponse(PAGE))])
    async with run_server(page_app) as page_url:
        # given a gateway that lists the page's origin, or not
        origins = [page_url] if listed else [APP]
        async with gateway(settings, origins) as http:
            out = await run_node(
                "browser.mjs",
                {
                    "PAGE": page_url,
                    "GATEWAY": str(http.base_url).rstrip("/"),
                    "TOKEN": make_token("u-1", tenant),
                    "CUSTOMER": str(cid),
                },
                timeout=90,
            )
            status = await http.get(
                f"/api/v1/customers/{cid}/lifecycle",
                headers={"Authorization": f"Bearer {make_token('u-1', tenant)}"},
            )
    if listed:
        # then it queries, mutates and sees its change live
        assert out == {"subscribed": True, "query": "u-1", "mutation": True, "live": "Onboarded"}
        assert status.json()["stage"] == "Onboarded"
    else:
        # then the browser refuses it all, and nothing changed
        assert out["subscribed"] is False and "live" not in out
        assert "Failed to fetch" in out["fetchError"]
        assert status.json()["stage"] == "Prospect"
    assert CLIENTS.exists()
