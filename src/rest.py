"""The REST shim (CONTRACT section 3): PATCH and GET /api/v1/customers/{id}/lifecycle."""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from customer360.auth.http import authenticate
from customer360.auth.principal import AuthError, Permission, Principal, act_in_tenant
from customer360.data.cloudevents import iso
from customer360.lifecycle import ChangeStage, Code, DomainError, FieldNames, Reason, Source
from customer360.lifecycle.inputs import check_change, check_text
from customer360.observability import REJECTED

STATUS = {
    Code.BAD_USER_INPUT: 400,
    Code.UNAUTHENTICATED: 401,
    Code.FORBIDDEN: 403,
    Code.NOT_FOUND: 404,
    Code.CONFLICT: 409,
    Code.RATE_LIMITED: 429,
    Code.INTERNAL_SERVER_ERROR: 500,
}
ETAG = re.compile(r'^\s*(?:W/)?"([0-9]{1,9})"\s*$')  # ASCII digits: \d is any script's
BODY_FIELDS = {"stage", "updated_by", "reason_code", "expected_version"}
NAMES = FieldNames("stage", "reason_code", "Idempotency-Key", "expected_version")


class RestError(Exception):
    def __init__(self, status: int, error: DomainError, headers: dict[str, str] | None = None):
        super().__init__(error.message)
        self.status, self.error, self.headers = status, error, headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse(
            {"success": False, "error": self.error.as_dict()}, self.status, headers=self.headers
        )


def _fail(status: int, code: Code, message: str, reason: Reason | None = None) -> RestError:
    return RestError(status, DomainError(code, message, reason))


def _id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise _fail(
            400, Code.BAD_USER_INPUT, "Not a valid customer id", Reason.INVALID_ID
        ) from None


async def _principal(request: Request) -> Principal:
    """The token alone; the X-Tenant-Id header is judged later, in the contract's order."""
    headers = {k: v for k, v in request.headers.items() if k != "x-tenant-id"}
    try:
        return await authenticate(request.app.state.services.verifier, headers)
    except AuthError as err:
        REJECTED.labels(err.metric).inc()
        auth = {"WWW-Authenticate": err.www_authenticate} if err.www_authenticate else {}
        raise RestError(err.status, DomainError(Code(err.code), err.message), auth) from None


def _in_tenant(request: Request, principal: Principal, needs: Permission) -> Principal:
    try:
        acting = act_in_tenant(principal, request.headers.get("x-tenant-id"))
    except AuthError as err:
        REJECTED.labels(err.metric).inc()
        raise _fail(403, Code.FORBIDDEN, err.message) from None
    if not acting.can(needs):
        raise _fail(403, Code.FORBIDDEN, f"Needs {needs.value}")
    return acting


def _body(raw: bytes) -> dict[str, Any]:
    """The body's JSON shape; its values are judged by the domain's own input check."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _fail(400, Code.BAD_USER_INPUT, "Body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _fail(400, Code.BAD_USER_INPUT, "Body must be a JSON object")
    stage = body.get("stage")
    if not isinstance(stage, str) or not stage:
        raise _fail(400, Code.BAD_USER_INPUT, "stage must be a non-empty string")
    for key in ("updated_by", "reason_code"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise _fail(400, Code.BAD_USER_INPUT, f"{key} must be a string")
    ev = body.get("expected_version")
    if ev is not None and (isinstance(ev, bool) or not isinstance(ev, int)):
        raise _fail(400, Code.BAD_USER_INPUT, "expected_version must be a non-negative integer")
    return body


def _if_match(request: Request) -> int | None:
    raw = request.headers.get("if-match")
    if raw is None:
        return None
    m = ETAG.match(raw)
    if m is None:
        raise _fail(400, Code.BAD_USER_INPUT, 'If-Match must be a quoted version, e.g. "3"')
    return int(m.group(1))


async def patch_lifecycle(request: Request) -> Response:
    try:
        principal = await _principal(request)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise _fail(415, Code.BAD_USER_INPUT, "Body must be application/json")
        customer_id = _id(request.path_params["id"])
        body = _body(await request.body())
        if_match = _if_match(request)
        expected = body.get("expected_version")
        if if_match is not None and expected is not None and if_match != expected:
            raise _fail(400, Code.BAD_USER_INPUT, "If-Match and expected_version disagree")
        key = request.headers.get("idempotency-key")
        version = if_match if if_match is not None else expected
        try:
            check_text("updated_by", body.get("updated_by"))
            check_change(body["stage"], body.get("reason_code"), key, version, NAMES)
        except DomainError as err:
            raise RestError(400, err) from None
        acting = _in_tenant(request, principal, Permission.UPDATE_LIFECYCLE)
        if body.get("updated_by") is not None and body["updated_by"] != acting.subject:
            raise _fail(403, Code.FORBIDDEN, "updated_by must be the token's subject")
        cmd = ChangeStage(
            tenant_id=acting.tenant_id,
            customer_id=customer_id,
            stage=body["stage"],
            actor=acting.subject,
            source=Source.API,
            reason_code=body.get("reason_code"),
            expected_version=version,
            idempotency_key=key,
        )
        updated = await request.app.state.services.usecases.update_stages([cmd])
        (outcome,) = updated.outcomes
        if isinstance(outcome, DomainError):
            status = STATUS[outcome.code]
            headers = {}
            if outcome.reason is Reason.IDEMPOTENCY_KEY_REUSED:
                status = 422
            elif outcome.code is Code.CONFLICT and if_match is not None:
                status = 412
            elif outcome.code is Code.RATE_LIMITED:
                headers["Retry-After"] = str(max(updated.retry_after, 1))
            raise RestError(status, outcome, headers)
        result = outcome
    except RestError as err:
        return err.response()
    return JSONResponse(
        {
            "success": True,
            "updated_at": iso(result.updated_at),
            "stage": result.stage,
            "version": result.version,
        },
        headers={"ETag": f'"{result.version}"'},
    )


async def get_lifecycle(request: Request) -> Response:
    try:
        principal = await _principal(request)
        customer_id = _id(request.path_params["id"])
        acting = _in_tenant(request, principal, Permission.VIEW_LIFECYCLE)
        reads = request.app.state.services.reads
        rows = await reads.customers_by_id(acting.tenant_id, [customer_id])
        row = rows.get(customer_id)
        if row is None:
            raise _fail(404, Code.NOT_FOUND, "No such customer")
    except RestError as err:
        return err.response()
    etag = f'"{row.version}"'
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers={"ETag": etag})
    config = await reads.stage_config(acting.tenant_id)
    return JSONResponse(
        {
            "customer_id": str(row.id),
            "stage": row.stage,
            "entered_at": iso(row.stage_entered_at),
            "updated_at": iso(row.lifecycle_updated_at),
            "updated_by": row.lifecycle_updated_by,
            "reason_code": row.reason_code,
            "source": row.source,
            "version": row.version,
            "allowed_next_stages": config.allowed_next_stages(row.stage),
        },
        headers={"ETag": etag},
    )


async def lifecycle(request: Request) -> Response:
    if request.method == "PATCH":
        return await patch_lifecycle(request)
    return await get_lifecycle(request)


# One route for both methods: with a route per method, Starlette's 405 for any other method
# came from the first route alone and said `Allow: PATCH`, hiding GET (RFC 9110 15.5.6).
routes = [Route("/api/v1/customers/{id}/lifecycle", lifecycle, methods=["GET", "PATCH"])]
