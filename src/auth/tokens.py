"""JWT validation with an explicit algorithm allow-list (CONTRACT section 2)."""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path
from typing import Any

import httpx
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ExpiredTokenError,
    InvalidClaimError,
    InvalidKeyIdError,
    JoseError,
    MissingAlgorithmError,
    MissingClaimError,
    MissingKeyError,
    UnsupportedAlgorithmError,
)
from joserfc.jwk import KeySet, OctKey

from customer360.settings import Settings

from .principal import AuthError, Principal, permissions_for

ASYMMETRIC = ["RS256", "ES256"]
MAX_TOKEN_BYTES = 8192
JWKS_REFRESH_COOLDOWN = 60.0
JWKS_MIN_AGE = 10.0
VERIFIED_CACHE = 4096


class JwksUrl:
    """Keys from a JWKS URL: refetched once they are older than the response's
    Cache-Control max-age (at most `max_age`), and on an unknown kid at most once a minute."""

    def __init__(self, url: str, max_age: float) -> None:
        self.url = url
        self.max_age = self.ttl = max_age
        self.keys: KeySet | None = None
        self.document = ""
        self.fetched_at = 0.0

    async def get(self, kid: str | None) -> KeySet:
        known = self.keys is not None and (kid is None or any(k.kid == kid for k in self.keys.keys))
        stale = time.monotonic() - self.fetched_at > JWKS_REFRESH_COOLDOWN
        if self.keys is None or (not known and stale):
            await self._fetch()
        assert self.keys is not None
        return self.keys

    async def refresh(self) -> bool:
        """Refetch when due; True when the key set changed."""
        if self.keys is not None and time.monotonic() - self.fetched_at < self.ttl:
            return False
        before = self.document
        await self._fetch()
        return bool(before) and self.document != before

    async def _fetch(self) -> None:
        async with httpx.AsyncClient(timeout=5.0) as client:
            resp = await client.get(self.url)
            resp.raise_for_status()
        document = resp.json()
        self.keys = KeySet.import_key_set(document)
        self.document = json.dumps(document, sort_keys=True)
        self.fetched_at = time.monotonic()
        self.ttl = _max_age(resp.headers.get("cache-control", ""), self.max_age)


def _max_age(cache_control: str, ceiling: float) -> float:
    """How long fetched keys may be kept: the response's max-age within [JWKS_MIN_AGE,
    ceiling]; no-store or no-cache as briefly as allowed; the ceiling when it says nothing."""
    directives = cache_control.lower()
    if "no-store" in directives or "no-cache" in directives:
        return JWKS_MIN_AGE
    match = re.search(r"(?:^|,)\s*max-age\s*=\s*(\d+)", directives)
    if match is None:
        return ceiling
    return min(max(float(match.group(1)), JWKS_MIN_AGE), ceiling)


class JwksFile:
    """Keys from a JWKS file, read again whenever it changes (a key withdrawn by rewriting
    the file stops being accepted at the next check)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stamp: tuple[float, int] | None = None
        self.document = ""
        self.keys = self._load()

    def _load(self) -> KeySet:
        stat = self.path.stat()
        text = self.path.read_text()
        document = json.loads(text)
        keys = KeySet.import_key_set(document)
        self.stamp, self.document = (
            (stat.st_mtime, stat.st_size),
            json.dumps(document, sort_keys=True),
        )
        return keys

    async def get(self, kid: str | None) -> KeySet:
        return self.keys

    async def refresh(self) -> bool:
        stat = self.path.stat()
        if (stat.st_mtime, stat.st_size) == self.stamp:
            return False
        before = self.document
        self.keys = self._load()
        return self.document != before


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        self.leeway = settings.jwt_leeway_seconds
        self.registry = jwt.JWTClaimsRegistry(
            leeway=self.leeway,
            iss={"essential": True, "value": settings.jwt_issuer},
            aud={"essential": True, "value": settings.jwt_audience},
            exp={"essential": True},
            sub={"essential": True},
            tenant_id={"essential": True},
        )
        self._verified: dict[str, Principal] = {}
        self.keys: JwksUrl | JwksFile | None = None
        self.hmac: OctKey | None = None
        # Moves on whenever the key set changes: tokens verified before are checked again.
        self.generation = 0
        if settings.jwt_jwks_file is not None:
            self.keys = JwksFile(settings.jwt_jwks_file)
        elif settings.jwt_jwks_url:
            self.keys = JwksUrl(settings.jwt_jwks_url, settings.jwt_jwks_refresh_seconds)
        secret = settings.hs256_secret
        if secret is not None:
            self.hmac = OctKey.import_key(secret)

    @property
    def configured(self) -> bool:
        return bool(self.keys or self.hmac)

    async def refresh_keys(self) -> bool:
        """Pick up a changed key set (JWKS URL when due, file when rewritten); True when it
        changed, and then no token verified before is taken on trust any more."""
        if self.keys is None or not await self.keys.refresh():
            return False
        self.generation += 1
        self._verified.clear()
        return True

    async def verify(self, token: str) -> Principal:
        """The token's principal; a token verified before is not re-checked until it expires."""
        cached = self._verified.get(token)
        if cached is not None:
            if cached.expires_at + self.leeway >= time.time():
                return cached
            del self._verified[token]
        principal = await self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE:
            self._verified.pop(next(iter(self._verified)))
        self._verified[token] = principal
        return principal

    async def _verify(self, token: str) -> Principal:
        if len(token) > MAX_TOKEN_BYTES:
            raise AuthError(401, "Token too large")
        try:
            header = _peek_header(token)
            if self.hmac is not None:
                decoded = jwt.decode(token, self.hmac, algorithms=["HS256"])
            elif self.keys is not None:
                keys = await self.keys.get(header.get("kid"))
                decoded = jwt.decode(token, keys, algorithms=ASYMMETRIC)
            else:
                raise AuthError(401, "No token check is configured")
            claims = decoded.claims
            self.registry.validate(claims)
        except AuthError:
            raise
        except (JoseError, ValueError, KeyError, TypeError, httpx.HTTPError) as exc:
            raise AuthError(401, why_refused(exc)) from None
        return _principal(claims)


_CLAIMS = {
    "iss": "Token issuer is not accepted",
    "aud": "Token audience is not accepted",
    "nbf": "Token is not valid yet",
    "iat": "Token is not valid yet",
}


def why_refused(exc: Exception) -> str:
    """What is wrong with a token, in the contract's words: never a class name, never a
    library's message (they may quote the token)."""
    if isinstance(exc, ExpiredTokenError):
        return "Token expired"
    if isinstance(exc, MissingClaimError):
        return f"Token lacks the {exc.claim} claim"
    if isinstance(exc, InvalidClaimError):
        return _CLAIMS.get(exc.claim, f"Token claim {exc.claim} is not valid")
    if isinstance(exc, BadSignatureError):
        return "Token signature does not verify"
    if isinstance(exc, UnsupportedAlgorithmError | MissingAlgorithmError | _AlgNone):
        return "Token algorithm is not accepted"
    if isinstance(exc, KeyError | InvalidKeyIdError | MissingKeyError):
        return "Token signing key is unknown"
    if isinstance(exc, httpx.HTTPError):
        return "Token signing keys are unavailable"
    return "Token is malformed"


class _AlgNone(ValueError):
    pass


def _peek_header(token: str) -> dict[str, Any]:
    head = token.split(".", 1)[0]
    raw = base64.urlsafe_b64decode(head + "=" * (-len(head) % 4))
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError("header is not an object")
    if str(value.get("alg", "")).lower() == "none":
        raise _AlgNone("alg none")
    return value


def _principal(claims: dict[str, Any]) -> Principal:
    sub, tenant, roles, exp = (
        claims.get("sub"),
        claims.get("tenant_id"),
        claims.get("roles", []),
        claims.get("exp"),
    )
    if not isinstance(sub, str) or not sub or not isinstance(tenant, str) or not tenant:
        raise AuthError(401, "Token lacks sub or tenant_id")
    if isinstance(roles, str):
        roles = [roles]
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise AuthError(401, "Token roles must be a list of strings")
    if not isinstance(exp, int | float):
        raise AuthError(401, "Token lacks exp")
    role_tuple = tuple(roles)
    return Principal(sub, tenant, role_tuple, permissions_for(role_tuple), tenant, int(exp))


def issue_dev_token(
    secret: str,
    *,
    sub: str,
    tenant: str,
    roles: list[str],
    issuer: str,
    audience: str,
    ttl: int = 3600,
) -> str:
    """A development token signed with C360_JWT_SECRET (`c360 token`, `c360 dev`, tests)."""
    now = int(time.time())
    claims = {
        "sub": sub,
        "tenant_id": tenant,
        "roles": roles,
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "exp": now + ttl,
    }
    return jwt.encode({"alg": "HS256", "typ": "JWT"}, claims, OctKey.import_key(secret))
