"""GraphQL over HTTP: authentication before execution, orjson, the local GraphiQL page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.schema import BaseSchema

from customer360.auth.http import authenticate
from customer360.auth.principal import AuthError
from customer360.observability import REJECTED

from .context import Context, make_loaders

STATIC = Path(__file__).resolve().parent / "static" / "graphiql"
GRAPHIQL_CSP = (
    "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:"
)


def auth_error_response(err: AuthError) -> JSONResponse:
    REJECTED.labels("unauthenticated" if err.status == 401 else "forbidden_tenant").inc()
    headers = {"WWW-Authenticate": err.www_authenticate} if err.www_authenticate else {}
    body = {"errors": [{"message": err.message, "extensions": {"code": err.code}}]}
    return JSONResponse(body, status_code=err.status, headers=headers)


def wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return request.method == "GET" and "text/html" in accept and "query" not in request.query_params


class GraphQLApp(GraphQL[Context, None]):
    """strawberry's ASGI view, answering refused tokens before any execution."""

    def __init__(self, schema: BaseSchema, *, graphiql: bool = True) -> None:
        super().__init__(schema, graphql_ide=None, subscription_protocols=())
        self.graphiql = graphiql

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            # Subscriptions arrive with the real-time work; until then the socket is refused.
            await WebSocket(scope, receive, send).close(code=4403)
            return
        request = Request(scope, receive)
        if wants_html(request):
            response: Response
            if self.graphiql:
                response = FileResponse(
                    STATIC / "index.html", headers={"Content-Security-Policy": GRAPHIQL_CSP}
                )
            else:
                response = JSONResponse({"errors": [{"message": "GraphiQL is disabled"}]}, 404)
            await response(scope, receive, send)
            return
        services = request.app.state.services
        try:
            principal = await authenticate(services.verifier, request.headers)
        except AuthError as err:
            await auth_error_response(err)(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await super().__call__(scope, receive, send)

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        services = request.app.state.services
        principal = request.state.principal
        return Context(
            principal=principal,
            reads=services.reads,
            engine=services.engine,
            loaders=make_loaders(services.reads, principal.tenant_id),
        )

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)
