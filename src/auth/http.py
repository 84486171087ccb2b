"""Authenticating an HTTP request before anything executes."""

from __future__ import annotations

from collections.abc import Mapping

from .principal import AuthError, Principal, act_in_tenant
from .tokens import TokenVerifier


async def authenticate(verifier: TokenVerifier, headers: Mapping[str, str]) -> Principal:
    """The principal of `Authorization` and `X-Tenant-Id`, or AuthError (401 / 403)."""
    raw = headers.get("authorization")
    if raw is None:
        raise AuthError(401, "Missing bearer token", header_sent=False)
    scheme, _, token = raw.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError(401, "Authorization must be a Bearer token")
    principal = await verifier.verify(token)
    return act_in_tenant(principal, headers.get("x-tenant-id"))
