"""The HTTP edge: the 1 MiB body limit, and POST /graphql served without the middleware stack.

Through Starlette's stack a request passes seven ASGI layers (error handler, HSTS, CORS,
metrics, body limit, exception middleware, router), each a coroutine frame and four of them a
send wrapper: under S1 (one customer by id) they took about a fifth of a worker's time
(bench/profile.py). POST /graphql is nearly all of the traffic, so `GraphQLPost` does what
those layers do for it in one frame with one send wrapper; every other request keeps the
stack. tests/api/test_edge.py pins the answers header by header.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from customer360.cors import Cors
from customer360.gql.limits import MAX_REQUEST_BYTES
from customer360.observability import HTTP_DURATION_BY, HTTP_REQUESTS_BY
from customer360.tls import HSTS

ErrorHandler = Callable[[Request, Exception], Awaitable[Response]]

ROUTE = "/graphql"
_HSTS = (b"strict-transport-security", HSTS.encode("latin-1"))
_VARY_ORIGIN = (b"vary", b"Origin")


class BodyLimit:
    """Refuses request bodies over 1 MiB with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int = MAX_REQUEST_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await limit_body(self.app, self.limit, scope, receive, send)


async def limit_body(app: ASGIApp, limit: int, scope: Scope, receive: Receive, send: Send) -> None:
    """`app`, answered 413 instead when the body is declared or turns out over `limit`."""
    declared = _header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        await too_large(scope, receive, send)
        return
    seen = 0

    async def limited() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise _TooLarge
        return message

    try:
        await app(scope, limited, send)
    except _TooLarge:
        await too_large(scope, receive, send)


class _TooLarge(Exception):
    pass


async def too_large(scope: Scope, receive: Receive, send: Send) -> None:
    message = "Request body over 1 MiB"
    body: dict[str, Any]
    if scope["path"].startswith("/api/"):
        error = {"code": "BAD_USER_INPUT", "message": message, "details": {}}
        body = {"success": False, "error": error}
    else:
        body = {"errors": [{"message": message, "extensions": {"code": "BAD_USER_INPUT"}}]}
    await JSONResponse(body, status_code=413)(scope, receive, send)


def _header(scope: Scope, name: bytes) -> bytes | None:
    """The last value of a request header, as `dict(scope["headers"])` would have it."""
    found: bytes | None = None
    value: bytes
    for key, value in scope["headers"]:
        if key == name:
            found = value
    return found


class GraphQLPost:
    """POST /graphql as the stack answers it, layer by layer from the outside in:

    - the 500 handler (ServerErrorMiddleware): an exception before the answer started is
      answered by `on_error` on the server's own send, outside HSTS and CORS, then raised on
      for the server to log;
    - HSTS over TLS (tls.StrictTransportSecurity) and CORS (cors.Cors: a POST is never a
      preflight), added to the answer's start;
    - the request metrics (observability.MetricsMiddleware), 500 when nothing was answered;
    - the body limit (BodyLimit);
    - Starlette's HTTPException, answered as its ExceptionMiddleware answers it.

    No router: Gateway checked the path and the method."""

    def __init__(self, app: ASGIApp, *, cors: Cors, on_error: ErrorHandler) -> None:
        self.app = app
        self.cors = cors
        self.on_error = on_error
        self.limit = MAX_REQUEST_BYTES
        self.cors_set = [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in cors.simple_headers.items()
        ]
        self.http_exception = ExceptionMiddleware(app).http_exception

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        status = 500
        started = False
        added = self._added(scope)

        async def answer(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                if added:
                    _add(message, added)
            await send(message)

        try:
            try:
                await limit_body(self.app, self.limit, scope, receive, answer)
            except HTTPException as exc:
                if started:
                    raise RuntimeError(
                        "Caught handled exception, but response already started."
                    ) from exc
                response = await self.http_exception(Request(scope, receive, answer), exc)
                await response(scope, receive, answer)
                exc.__traceback__ = None
            finally:
                HTTP_REQUESTS_BY("POST", ROUTE, str(status)).inc()
                HTTP_DURATION_BY("POST", ROUTE).observe(time.perf_counter() - start)
        except Exception as exc:
            response = await self.on_error(Request(scope), exc)
            if not started:
                await response(scope, receive, send)
            raise

    def _added(self, scope: Scope) -> list[tuple[bytes, bytes]]:
        """The headers CORS and HSTS put on this request's answer, in the order they did."""
        added: list[tuple[bytes, bytes]] = []
        origin = _header_first(scope, b"origin")
        if origin is not None:
            cors = self.cors
            if cors.is_allowed_origin(origin.decode("latin-1")):
                added += self.cors_set
                if not cors.allow_all_origins:
                    added.append((b"access-control-allow-origin", origin))
            added.append(_VARY_ORIGIN)
        if scope.get("scheme") == "https":
            added.append(_HSTS)
        return added


def _header_first(scope: Scope, name: bytes) -> bytes | None:
    """The first value of a request header, as starlette's Headers.get has it."""
    value: bytes
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def _add(message: Message, added: list[tuple[bytes, bytes]]) -> None:
    """`added` on the answer's start. An answer that already names one of them (none of ours
    does) gets them set and merged exactly as the CORS and HSTS layers set them."""
    raw = message.setdefault("headers", [])
    names = {k for k, _ in added}
    if not any(k.lower() in names for k, _ in raw):
        message["headers"] = [*raw, *added]
        return
    headers = MutableHeaders(scope=message)
    for key, value in added:
        if key == b"vary":
            headers["Vary"] = ", ".join([*headers.getlist("Vary"), "Origin"])
        else:
            headers[key.decode("latin-1")] = value.decode("latin-1")
