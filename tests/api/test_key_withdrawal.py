"""A signing key the identity provider withdraws stops being accepted within the refresh
interval: new requests, tokens verified and cached before, and open sockets (closed 4403).
With a JWKS file that is rewritten and a JWKS URL that changes (issue 13 item 6)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from customer360.app import create_app
from customer360.settings import Settings
from tests.conftest import AUDIENCE, ISSUER, run_server
from tests.live.wsclient import connect

OLD = ECKey.generate_key("P-256", parameters={"kid": "old"})
NEW = ECKey.generate_key("P-256", parameters={"kid": "new"})


def token(key: ECKey, tenant: str) -> str:
    now = int(time.time())
    claims = {
        "sub": "u-1",
        "tenant_id": tenant,
        "roles": ["ROLE_ACCOUNT_MANAGER"],
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 600,
    }
    return jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key)


def jwks(*keys: ECKey) -> dict[str, Any]:
    return KeySet(list(keys)).as_dict(private=False)


async def _withdrawal(settings: Settings, tenant: str, withdraw: Any, **keys: Any) -> None:
    gateway = settings.model_copy(
        update={
            "kafka_bootstrap": "off",
            "jwt_secret": None,
            "jwt_jwks_refresh_seconds": 0.3,
            **keys,
        }
    )
    old, new = token(OLD, tenant), token(NEW, tenant)
    query = {"query": "{ viewer { subject } }"}
    async with run_server(create_app(gateway)) as url, httpx.AsyncClient(base_url=url) as http:
        # given a token of the old key, verified once (and so cached), and a socket it opened
        ok = await http.post("/graphql", json=query, headers={"Authorization": f"Bearer {old}"})
        assert ok.status_code == 200, ok.text
        async with connect(url, {"Authorization": f"Bearer {old}"}) as ws:
            # when the identity provider withdraws the old key
            await withdraw()
            # then the socket is closed with 4403 within the refresh interval
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.receive(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403
        # and the old key's token is refused, though it was verified and cached before
        refused = await http.post(
            "/graphql", json=query, headers={"Authorization": f"Bearer {old}"}
        )
        assert refused.status_code == 401
        assert "key is unknown" in refused.json()["errors"][0]["message"]
        # while the new key's tokens work
        fine = await http.post("/graphql", json=query, headers={"Authorization": f"Bearer {new}"})
        assert fine.status_code == 200, fine.text


async def test_a_key_withdrawn_from_the_jwks_file(settings, tenant, tmp_path: Path) -> None:
    keys = tmp_path / "jwks.json"
    keys.write_text(json.dumps(jwks(OLD, NEW)))

    async def withdraw() -> None:
        keys.write_text(json.dumps(jwks(NEW)))

    await _withdrawal(settings, tenant, withdraw, jwt_jwks_file=keys)


async def test_a_key_withdrawn_from_the_jwks_url(settings, tenant) -> None:
    current = {"keys": jwks(OLD, NEW)}
    fetches = 0

    async def serve(request: Request) -> JSONResponse:
        nonlocal fetches
        fetches += 1
        # the identity provider says how long its answer may be kept
        return JSONResponse(current["keys"], headers={"Cache-Control": "public, max-age=1"})

    async def withdraw() -> None:
        current["keys"] = jwks(NEW)

    async with run_server(Starlette(routes=[Route("/jwks", serve)])) as idp:
        await _withdrawal(settings, tenant, withdraw, jwt_jwks_url=f"{idp}/jwks")
    assert fetches >= 2
    await asyncio.sleep(0)
