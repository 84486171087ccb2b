"""HTTPS only (the seed's rule, CONTRACT section 7): `c360 serve` terminates TLS itself, or
trusts the forwarded headers of the listed proxies only; HSTS over TLS; a production start
that would serve plain HTTP refuses to run."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import websockets

from customer360.app import create_app
from customer360.devstack import free_port
from customer360.settings import Settings
from customer360.tls import HSTS, server_options
from tests.conftest import make_token, run_server, serve_env, until_healthy
from tests.helpers import make_certificates, move

ROOT = Path(__file__).resolve().parents[2]


def production_env(settings: Settings, **extra: str) -> dict[str, str]:
    return serve_env(settings, C360_ENV="production", C360_JWT_ALLOW_HS256="1", **extra)


async def test_serve_terminates_tls_https_and_wss_with_hsts(
    settings: Settings, tenant: str, make_customer, tmp_path: Path
) -> None:
    # given `c360 serve` in production with a certificate of a CA the test made
    tls = make_certificates(tmp_path)
    port = free_port()
    env = production_env(
        settings, C360_TLS_CERT_FILE=str(tls["cert"]), C360_TLS_KEY_FILE=str(tls["key"])
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "customer360.cli", "serve", "--port", str(port), env=env, cwd=ROOT
    )
    trust = ssl.create_default_context(cafile=str(tls["ca"]))
    base = f"https://localhost:{port}"
    token = make_token("u-1", tenant)
    cid = await make_customer(tenant)
    try:
        async with httpx.AsyncClient(base_url=base, verify=trust, timeout=10) as https:
            await until_healthy(https, 150)
            # when a client queries over HTTPS
            resp = await https.post(
                "/graphql",
                json={"query": "{ viewer { subject } }"},
                headers={"Authorization": f"Bearer {token}"},
            )
            # then it is answered, with HSTS
            assert resp.status_code == 200 and resp.json()["data"]["viewer"]["subject"] == "u-1"
            assert resp.headers["strict-transport-security"] == HSTS
            # and a subscription over WSS sees a change made over HTTPS
            async with websockets.connect(
                f"wss://localhost:{port}/graphql", ssl=trust, subprotocols=["graphql-transport-ws"]
            ) as ws:
                init = {"Authorization": f"Bearer {token}"}
                await ws.send(json.dumps({"type": "connection_init", "payload": init}))
                assert json.loads(await ws.recv())["type"] == "connection_ack"
                query = "subscription($id: ID) { lifecycleChanged(customerId: $id) { cursor } }"
                await ws.send(
                    json.dumps(
                        {
                            "id": "1",
                            "type": "subscribe",
                            "payload": {"query": query, "variables": {"id": str(cid)}},
                        }
                    )
                )
                await asyncio.sleep(0.5)

                class Api:
                    http = https

                    @staticmethod
                    async def patch(c, body):  # type: ignore[no-untyped-def]
                        return await https.patch(
                            f"/api/v1/customers/{c}/lifecycle",
                            json=body,
                            headers={"Authorization": f"Bearer {token}"},
                        )

                await move(Api, cid, "Onboarded")
                frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert frame["type"] == "next" and frame["payload"]["data"]["lifecycleChanged"]
        # and plain HTTP on that port gets nothing
        with pytest.raises(httpx.HTTPError):
            async with httpx.AsyncClient(timeout=5) as plain:
                await plain.get(f"http://127.0.0.1:{port}/healthz")
    finally:
        proc.terminate()
        await proc.wait()


def test_a_production_start_that_would_serve_plain_http_refuses(settings: Settings) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "customer360.cli", "serve"],
        env=production_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 1
    assert "plain HTTP" in out.stderr and "C360_TLS_PROXY" in out.stderr
    # nor does a certificate without its key start anything
    half = subprocess.run(
        [sys.executable, "-m", "customer360.cli", "serve"],
        env=production_env(settings, C360_TLS_CERT_FILE="/etc/hostname"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert half.returncode == 1 and "go together" in half.stderr


@pytest.mark.parametrize(
    ("proxies", "trusted"), [(["127.0.0.1"], True), (["10.9.0.0/16", "::1"], False)]
)
async def test_forwarded_headers_are_trusted_from_the_listed_proxies_only(
    settings: Settings, tenant: str, proxies: list[str], trusted: bool
) -> None:
    # given a gateway behind TLS-terminating proxies (this test's client is 127.0.0.1)
    behind = settings.model_copy(
        update={
            "tls_proxy": proxies,
            "kafka_bootstrap": "off",
            "env": "production",
            "jwt_allow_hs256": True,
        }
    )
    assert behind.production_problems() == []  # a proxy in front is HTTPS enough
    options = server_options(behind)
    async with (
        run_server(create_app(behind), **options) as url,
        httpx.AsyncClient(base_url=url) as http,
    ):
        # when a request says it came in over HTTPS, from a client elsewhere
        resp = await http.get(
            "/healthz", headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}
        )
        probe = await http.get("/readyz")  # a probe from inside, plain HTTP
    # then only a listed proxy is believed: HSTS as over TLS, or nothing
    assert resp.status_code == 200
    assert ("strict-transport-security" in resp.headers) is trusted
    assert probe.status_code == 200 and "strict-transport-security" not in probe.headers


def test_a_proxy_list_entry_that_is_no_address_is_refused() -> None:
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6"):
        Settings(_env_file=None, tls_proxy="10.0.0.0/8, proxy.internal")  # type: ignore[call-arg]
