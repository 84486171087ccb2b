"""RS256/ES256 through a JWKS file or URL; HS256 refused once keys are configured."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OctKey, RSAKey
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from customer360.auth.principal import AuthError
from customer360.auth.tokens import TokenVerifier
from customer360.settings import Settings
from tests.conftest import run_server

RSA = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"})
EC = ECKey.generate_key("P-256", parameters={"kid": "ec-1"})


def claims(**extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "sub": "u",
        "tenant_id": "t",
        "roles": ["ROLE_TENANT_ADMIN"],
        "iss": "c360-dev",
        "aud": "customer360",
        "exp": now + 60,
        **extra,
    }


def public_jwks() -> dict[str, Any]:
    return KeySet([RSA, EC]).as_dict(private=False)


def settings(**kw: Any) -> Settings:
    return Settings(_env_file=None, **kw)  # type: ignore[call-arg]


@pytest.fixture
def jwks_file(tmp_path: Path) -> Path:
    f = tmp_path / "jwks.json"
    f.write_text(json.dumps(public_jwks()))
    return f


@pytest.mark.parametrize(("alg", "key"), [("RS256", RSA), ("ES256", EC)])
async def test_asymmetric_tokens_from_a_jwks_file(jwks_file: Path, alg: str, key: Any) -> None:
    v = TokenVerifier(settings(jwt_jwks_file=jwks_file, jwt_secret="also-set-but-unused"))
    token = jwt.encode({"alg": alg, "kid": key.kid}, claims(), key)
    p = await v.verify(token)
    assert (p.subject, p.tenant_id) == ("u", "t")


async def test_hs256_is_refused_when_keys_are_configured(jwks_file: Path) -> None:
    secret = "a-secret-that-would-otherwise-be-accepted-0123456789"
    v = TokenVerifier(settings(jwt_jwks_file=jwks_file, jwt_secret=secret))
    token = jwt.encode({"alg": "HS256"}, claims(), OctKey.import_key(secret))
    with pytest.raises(AuthError) as e:
        await v.verify(token)
    assert e.value.status == 401


async def test_hs256_with_the_public_key_as_secret_is_refused(jwks_file: Path) -> None:
    # the classic key-confusion attack, signed by hand (JOSE libraries refuse to build it)
    v = TokenVerifier(settings(jwt_jwks_file=jwks_file))
    pem = RSA.as_pem(private=False)

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "kid": "rsa-1"}).encode())
    body = b64(json.dumps(claims()).encode())
    sig = b64(hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest())
    token = f"{head}.{body}.{sig}"
    with pytest.raises(AuthError):
        await v.verify(token)


async def test_production_refuses_hs256_unless_allowed() -> None:
    secret = "production-secret-0123456789-0123456789"
    token = jwt.encode({"alg": "HS256"}, claims(), OctKey.import_key(secret))
    with pytest.raises(AuthError):
        await TokenVerifier(settings(env="production", jwt_secret=secret)).verify(token)
    allowed = TokenVerifier(settings(env="production", jwt_secret=secret, jwt_allow_hs256=True))
    assert (await allowed.verify(token)).subject == "u"


async def test_keys_from_a_jwks_url_are_fetched_once_and_cached() -> None:
    fetches = 0

    async def jwks(request: Any) -> JSONResponse:
        nonlocal fetches
        fetches += 1
        return JSONResponse(public_jwks())

    async with run_server(Starlette(routes=[Route("/jwks", jwks)])) as url:
        v = TokenVerifier(settings(jwt_jwks_url=f"{url}/jwks"))
        for i in range(3):
            token = jwt.encode({"alg": "RS256", "kid": "rsa-1"}, claims(n=i), RSA)
            assert (await v.verify(token)).subject == "u"
        # an unknown kid refetches at most once per cooldown, however many arrive
        stranger = RSAKey.generate_key(2048, parameters={"kid": "nobody"})
        for i in range(5):
            with pytest.raises(AuthError):
                await v.verify(jwt.encode({"alg": "RS256", "kid": "nobody"}, claims(n=i), stranger))
    assert fetches == 1
