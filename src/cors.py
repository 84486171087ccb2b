"""Cross-origin browser access to the HTTP endpoints, from the allow-list the WebSocket uses
(C360_ALLOWED_ORIGINS). Bearer tokens, not cookies: no credentials mode is needed."""

from __future__ import annotations

from collections.abc import Sequence

from starlette.datastructures import Headers, MutableHeaders
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

METHODS = ("GET", "POST", "PATCH")
# What the GraphQL endpoint and the REST shim read from a request.
REQUEST_HEADERS = ("Authorization", "Content-Type", "X-Tenant-Id", "Idempotency-Key", "If-Match")
# What a browser app may read from a response: the version (REST) and when to retry (429).
EXPOSED_HEADERS = ("ETag", "Retry-After")
PREFLIGHT_CACHE_SECONDS = 600


class Cors(CORSMiddleware):
    """Starlette's CORS middleware, saying nothing CORS at all to an origin not listed (it
    would still list the allowed methods and headers in a refused preflight, and the exposed
    headers in every answer)."""

    def __init__(self, app: ASGIApp, origins: Sequence[str]) -> None:
        super().__init__(
            app,
            allow_origins=list(origins),
            allow_methods=list(METHODS),
            allow_headers=list(REQUEST_HEADERS),
            expose_headers=list(EXPOSED_HEADERS),
            allow_credentials=False,
            max_age=PREFLIGHT_CACHE_SECONDS,
        )

    async def simple_response(
        self, scope: Scope, receive: Receive, send: Send, request_headers: Headers
    ) -> None:
        origin = request_headers.get("origin")
        if origin is None:  # not a cross-origin request: nothing to say
            await self.app(scope, receive, send)
            return
        if self.is_allowed_origin(origin):
            await super().simple_response(scope, receive, send, request_headers)
            return

        async def vary(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers["Vary"] = ", ".join([*headers.getlist("Vary"), "Origin"])
            await send(message)

        await self.app(scope, receive, vary)

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if not self.is_allowed_origin(request_headers["origin"]):
            for name in [h for h in response.headers if h.startswith("access-control-")]:
                del response.headers[name]
        return response
