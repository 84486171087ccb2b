"""Operators' endpoints: liveness, readiness with real checks, metrics, the GraphiQL page."""

from __future__ import annotations

import asyncio
import re

import httpx

from customer360.app import create_app
from customer360.devstack import free_port
from tests.conftest import run_server


async def test_healthz_needs_no_token(http) -> None:
    resp = await http.get("/healthz")
    assert resp.status_code == 200


async def test_readyz_reports_each_backend(http) -> None:
    for _ in range(300):  # the Kafka link connects in the background at start
        resp = await http.get("/readyz")
        if resp.json()["status"] == "ready":
            break
        await asyncio.sleep(0.1)
    assert resp.status_code == 200
    assert resp.json() == {
        "status": "ready",
        "checks": {"postgres": "ok", "redis": "ok", "kafka": "ok"},
    }


async def test_readyz_says_off_when_kafka_is_off(settings) -> None:
    off = settings.model_copy(update={"kafka_bootstrap": "off"})
    async with run_server(create_app(off)) as url, httpx.AsyncClient(base_url=url) as c:
        resp = await c.get("/readyz")
    assert resp.status_code == 200
    assert resp.json()["checks"] == {"postgres": "ok", "redis": "ok", "kafka": "off"}


async def test_readyz_is_degraded_but_200_when_kafka_alone_does_not_answer(settings) -> None:
    # given a gateway whose Kafka is a port nobody listens on
    no_kafka = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    async with run_server(create_app(no_kafka)) as url, httpx.AsyncClient(base_url=url) as c:
        resp = await c.get("/readyz")
    # then it stays in rotation (changes commit to the outbox), saying what is missing
    assert resp.status_code == 200
    body = resp.json()
    assert body["status"] == "degraded"
    assert body["checks"]["postgres"] == "ok" and body["checks"]["redis"] == "ok"
    assert body["checks"]["kafka"].startswith("error: ")


async def test_readyz_is_503_when_redis_does_not_answer(settings) -> None:
    # given a gateway whose Redis URL points at a port nobody listens on
    dead = settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{free_port()}/0", "kafka_bootstrap": "off"}
    )
    async with run_server(create_app(dead)) as url, httpx.AsyncClient(base_url=url) as c:
        resp = await c.get("/readyz")
    assert resp.status_code == 503
    body = resp.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["postgres"] == "ok"
    assert body["checks"]["redis"].startswith("error: ")


async def test_metrics_count_requests_and_transitions_by_source(api, make_customer) -> None:
    cid = await make_customer()
    before = await api.http.get("/metrics")
    await api.patch(cid, {"stage": "Active"})
    text = (await api.http.get("/metrics")).text
    assert before.headers["content-type"].startswith("text/plain")

    def value(body: str, name: str) -> float:
        m = re.search(rf"^{re.escape(name)} (\S+)$", body, re.M)
        return float(m.group(1)) if m else 0.0

    key = 'c360_lifecycle_transitions_total{source="API"}'
    assert value(text, key) == value(before.text, key) + 1
    assert "c360_http_requests_total{" in text
    assert "c360_http_request_duration_seconds_bucket{" in text
    # ids never become label values
    assert str(cid) not in text


async def test_graphiql_page_loads_only_local_assets(http) -> None:
    page = await http.get("/graphql", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert "default-src 'self'" in page.headers["content-security-policy"]
    refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert refs and all(r.startswith("/graphiql-static/") for r in refs), refs
    for ref in refs:
        asset = await http.get(ref)
        assert asset.status_code == 200, ref
        # nothing is fetched from a CDN at load time (error texts may still name one)
        for cdn in ("https://unpkg.com", "https://cdn.jsdelivr.net", "fonts.googleapis"):
            assert cdn not in asset.text, (ref, cdn)
        if ref.endswith(".css"):
            assert not re.search(r"url\(\s*['\"]?https?:", asset.text), ref
