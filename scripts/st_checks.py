"""Schemathesis hooks (SCHEMATHESIS_HOOKS): the one custom check, `no_internal_error`.

The contract reports expected failures (NOT_FOUND, CONFLICT, FORBIDDEN, RATE_LIMITED...) in
GraphQL `errors[]` with a `path`, which schemathesis' GraphQL `not_a_server_error` counts as
server errors. What the service must never do is fail unexpectedly: a 5xx, or an error masked
as INTERNAL_SERVER_ERROR (how the gateway reports an exception nobody expected, including a
null in a non-null field).
"""

from __future__ import annotations

from typing import Any

import schemathesis


def _codes(body: Any) -> list[str]:
    if not isinstance(body, dict):
        return []
    errors = body.get("errors") or []
    codes = [
        e["extensions"].get("code")
        for e in errors
        if isinstance(e, dict) and isinstance(e.get("extensions"), dict)
    ]
    error = body.get("error")
    if isinstance(error, dict):
        codes.append(error.get("code"))
    return [c for c in codes if isinstance(c, str)]


@schemathesis.check
def no_internal_error(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case[Any]
) -> bool | None:
    """5xx never, and no INTERNAL_SERVER_ERROR in a GraphQL or REST error body."""
    if response.status_code >= 500:
        raise AssertionError(f"Server error: HTTP {response.status_code}: {response.text[:500]}")
    try:
        body = response.json()
    except ValueError:
        return None
    if "INTERNAL_SERVER_ERROR" in _codes(body):
        raise AssertionError(f"Unexpected failure masked as INTERNAL_SERVER_ERROR: {body}")
    return None
