"""GraphQL over HTTP: authentication before execution, orjson, the local GraphiQL page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.types import Message, Receive, Scope, Send
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


GRAPHQL_RESPONSE = "application/graphql-response+json"


def prefers_graphql_response(accept: str) -> bool:
    """True when the client lists application/graphql-response+json before plain JSON."""
    media = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    if GRAPHQL_RESPONSE not in media:
        return False
    return "application/json" not in media or (
        media.index(GRAPHQL_RESPONSE) < media.index("application/json")
    )


class GraphQLResponseSend:
    """Answers as `application/graphql-response+json` (GraphQL over HTTP): a request error
    (parse, validation, variable coercion: errors without a path and no data) is a 400 and
    carries no `data` entry."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.start: Message | None = None
        self.body = b""

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.start = message
            return
        if message["type"] != "http.response.body" or self.start is None:
            await self.send(message)
            return
        self.body += message.get("body", b"")
        if message.get("more_body"):
            return
        start, body = self.start, self.body
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-type"]
        status = start["status"]
        if status == 200:
            try:
                doc = orjson.loads(body)
            except orjson.JSONDecodeError:
                doc = None
            if (
                isinstance(doc, dict)
                and doc.get("data") is None
                and doc.get("errors")
                and all("path" not in e for e in doc["errors"])
            ):
                doc.pop("data", None)
                body, status = orjson.dumps(doc), 400
        headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
        headers += [
            (b"content-type", GRAPHQL_RESPONSE.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        await self.send({**start, "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})


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
        if prefers_graphql_response(request.headers.get("accept", "")):
            send = GraphQLResponseSend(send)
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
