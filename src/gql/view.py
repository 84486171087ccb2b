"""GraphQL over HTTP: authentication before execution, orjson, the local GraphiQL page."""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from cross_web import HTTPException  # what strawberry's views raise
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.schema import BaseSchema
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL
from strawberry.types.graphql import OperationType

from customer360.auth.http import authenticate
from customer360.auth.principal import AuthError, Principal
from customer360.auth.sockets import SocketSlots
from customer360.auth.tokens import TokenVerifier
from customer360.observability import REJECTED

from .asgi import read_body, replay, request_headers, send_json
from .context import Context
from .fastpath import FastPath
from .once import Outcomes
from .responses import GraphQLResponseSend, prefers_graphql_response, transport_error
from .wslimits import (
    CLOSE_FORBIDDEN,
    CLOSE_TOO_MANY,
    OPEN_SOCKETS,
    REJECT_REINIT,
    REJECT_TOO_MANY_SOCKETS,
    LegacyWSHandler,
    SocketRefused,
    TransportWSHandler,
)

STATIC = Path(__file__).resolve().parent / "static" / "graphiql"
SUBSCRIPTIONS_OVER_WS = (
    "Subscriptions are served over the WebSocket at /graphql (subprotocol "
    "graphql-transport-ws, as graphql-ws clients speak it), not over HTTP"
)
GRAPHIQL_CSP = (
    "default-src 'self'; connect-src 'self' ws: wss:; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:"
)


def _context(
    services: Any,
    principal: Principal | None,
    clock: datetime | None,
    websocket: WebSocket | None = None,
    outcomes: Outcomes | None = None,
) -> Context:
    """A request's context, authenticated before execution; a socket's, authenticated at
    connection_init (on_ws_connect), one context per socket."""
    return Context(
        reads=services.reads,
        usecases=services.usecases,
        hub=services.hub,
        websocket=websocket,
        _principal=principal,
        clock=clock,
        outcomes=outcomes,
    )


def auth_error_response(err: AuthError) -> JSONResponse:
    REJECTED.labels(err.metric).inc()
    headers = {"WWW-Authenticate": err.www_authenticate} if err.www_authenticate else {}
    body = {"errors": [{"message": err.message, "extensions": {"code": err.code}}]}
    return JSONResponse(body, status_code=err.status, headers=headers)


def wants_html(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return request.method == "GET" and "text/html" in accept and "query" not in request.query_params


_CLOSING: set[asyncio.Task[None]] = set()


def _forget_handshake(websocket: WebSocket | None) -> None:
    """Let uvicorn drop the handshake's parsed request and response once the socket is open.

    uvicorn (0.54, websockets-sansio) keeps both, with their header multidicts, for
    the socket's whole life though it never reads them again: about 4.7 KB per socket, more
    with a browser's cookies. Only attributes it assigns at the handshake are touched, and
    only when they exist, so another server or version is simply left as it is."""
    send = getattr(websocket, "_send", None)
    protocol = getattr(send, "__self__", None)
    if protocol is None or not getattr(protocol, "handshake_complete", False):
        return
    for name in ("request", "response"):
        if getattr(protocol, name, None) is not None:
            setattr(protocol, name, None)


def _expire(context: Context, reason: str = "Token expired") -> None:
    """At the token's expiry: close the socket (4403), whatever it is doing then."""
    websocket = context.websocket
    if websocket is None or websocket.client_state is WebSocketState.DISCONNECTED:
        return
    task = asyncio.create_task(context.close_socket(CLOSE_FORBIDDEN, reason))
    _CLOSING.add(task)
    task.add_done_callback(_CLOSING.discard)


def _socket_headers(context: Context) -> dict[str, str]:
    """The connection_init payload as the request headers it stands for."""
    params = context.connection_params or {}
    headers = {}
    for key in ("Authorization", "authorization"):
        if isinstance(params.get(key), str):
            headers["authorization"] = params[key]
            break
    for key in ("X-Tenant-Id", "x-tenant-id"):
        if isinstance(params.get(key), str):
            headers["x-tenant-id"] = params[key]
            break
    return headers


async def recheck_sockets(verifier: TokenVerifier) -> int:
    """After the token keys changed: every open socket whose token no longer verifies (its
    key withdrawn) is closed with 4403, as at its expiry; returns how many."""
    closed = 0
    for context in list(OPEN_SOCKETS.values()):
        try:
            await authenticate(verifier, _socket_headers(context))
        except AuthError as err:
            _expire(context, err.message)
            closed += 1
    return closed


_ENCODED: OrderedDict[int, tuple[object, bytes]] = OrderedDict()
_ENCODED_MAX = 256


def _encode_frame(message: Mapping[str, object]) -> str:
    """A `next` frame whose data object was encoded before (members of one subscription group
    share the same result) reuses those bytes: one encode per group, not per socket."""
    payload = message.get("payload")
    if message.get("type") != "next" or not isinstance(payload, dict) or set(payload) != {"data"}:
        return orjson.dumps(message).decode()
    data = payload["data"]
    hit = _ENCODED.get(id(data))
    if hit is not None and hit[0] is data:
        encoded = hit[1]
    else:
        encoded = orjson.dumps(data)
        _ENCODED[id(data)] = (data, encoded)  # holding `data` keeps its id from being reused
        if len(_ENCODED) > _ENCODED_MAX:
            _ENCODED.popitem(last=False)
    head = orjson.dumps(message.get("id")).decode()
    return f'{{"id":{head},"type":"next","payload":{{"data":{encoded.decode()}}}}}'


class TextWebSocketAdapter(ASGIWebSocketAdapter):
    """graphql-ws clients read text frames only; our orjson encoder yields bytes."""

    async def send_json(self, message: Mapping[str, object]) -> None:
        try:
            await self.ws.send_text(_encode_frame(message))
        except WebSocketDisconnect as exc:
            raise WebSocketDisconnected from exc


class GraphQLApp(GraphQL[Context, None]):
    """strawberry's ASGI view, answering refused tokens before any execution."""

    websocket_adapter_class = TextWebSocketAdapter
    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyWSHandler

    def __init__(
        self,
        schema: BaseSchema,
        *,
        graphiql: bool = True,
        ws_legacy: bool = False,
        allowed_origins: Sequence[str] = (),
        ws_max_subscriptions: int = 50,
        ws_max_sockets_per_principal: int = 20,
        ws_init_timeout: timedelta = timedelta(seconds=3),
        fast: FastPath | None = None,
    ) -> None:
        protocols = [GRAPHQL_TRANSPORT_WS_PROTOCOL]
        if ws_legacy:
            protocols.append(GRAPHQL_WS_PROTOCOL)
        super().__init__(
            schema,
            graphql_ide=None,
            subscription_protocols=protocols,
            connection_init_wait_timeout=ws_init_timeout,
            max_subscriptions_per_connection=ws_max_subscriptions,
            # Besides same-origin pages and non-browser clients (strawberry allows both).
            allowed_origins=allowed_origins,
        )
        self.graphiql = graphiql
        self.fast = fast
        # Per view, so per process: each gateway process admits its own share.
        self.socket_slots = SocketSlots(ws_max_sockets_per_principal)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await super().__call__(scope, receive, send)
            return
        if scope["method"] == "POST":
            await self._post(scope, receive, send)
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
        await self._strawberry(request, send)

    async def _post(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A POST, read and (by the compiled path) answered without starlette's Request and
        Response (asgi.py): nearly every request is one. Never GraphiQL (GET only)."""
        headers = request_headers(scope["headers"])
        services = scope["app"].state.services
        try:
            principal = await authenticate(services.verifier, headers)
        except AuthError as err:
            await auth_error_response(err)(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        if prefers_graphql_response(headers.get("accept", "")):
            send = GraphQLResponseSend(send)
        fast = self.fast
        if (
            fast is None
            or fast.mode == "off"
            or not headers.get("content-type", "").startswith("application/json")
        ):
            await self._strawberry(Request(scope, receive), send)
            return
        raw = await read_body(receive)
        # Whoever answers, the compiled path or strawberry after it, writes once (once.py).
        outcomes: Outcomes = {}
        scope["state"]["outcomes"] = outcomes
        request: Request | None = None
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            answer = None
        else:
            if fast.mode == "verify":
                request = Request(scope, replay(raw, receive))
                request.state.clock = datetime.now(UTC)  # one clock for both runs
                answer = await self._verified(fast, body, request)
            else:
                context = _context(services, principal, None, outcomes=outcomes)
                answer = await fast.answer(body, context)
        if answer is not None:
            await send_json(send, answer)
            return
        await self._strawberry(request or Request(scope, replay(raw, receive)), send)

    async def _strawberry(self, request: Request, send: Send) -> None:
        """strawberry's answer, its refusals in the contract's terms."""
        response: Response
        try:
            response = await self.run(request)
        except HTTPException as exc:
            status, reason = exc.status_code, exc.reason
            refused = exc.__cause__
            if isinstance(refused, InvalidOperationTypeError):
                if refused.operation_type is OperationType.SUBSCRIPTION:
                    status, reason = 400, SUBSCRIPTIONS_OVER_WS
                elif request.method == "GET":
                    status = 405  # a mutation over GET: GraphQL over HTTP says 405, strawberry 400
            response = transport_error(status, reason)
        await response(request.scope, request.receive, send)

    async def _verified(self, fast: FastPath, body: object, request: Request) -> bytes | None:
        """The compiled path's answer, strawberry's run on the same request beside it and
        any difference recorded (fastpath.py, `verify` mode)."""
        answer = await fast.answer(body, await self.get_context(request, None))
        if answer is not None:

            async def reference() -> bytes:
                return bytes((await self.run(request)).body)

            async def again() -> bytes | None:
                return await fast.answer(body, await self.get_context(request, None))

            await fast.verify(body, answer, reference, again)
        return answer

    async def get_context(self, request: Request | WebSocket, response: Any) -> Context:
        services = request.app.state.services
        if isinstance(request, WebSocket):
            return _context(services, None, None, request)
        state = request.state
        clock, outcomes = getattr(state, "clock", None), getattr(state, "outcomes", None)
        return _context(services, state.principal, clock, outcomes=outcomes)

    async def on_ws_connect(self, context: Context) -> None:
        """The token travels in the connection_init payload; a bad one closes with 4403, one
        socket over the principal's budget with 4429."""
        if context.socket_slot is not None:
            # graphql-ws lets a client init again; each init would take another slot.
            raise SocketRefused(CLOSE_TOO_MANY, "Too many initialisation requests", REJECT_REINIT)
        _forget_handshake(context.websocket)
        assert context.websocket is not None
        services = context.websocket.app.state.services
        try:
            principal = await authenticate(services.verifier, _socket_headers(context))
        except AuthError as err:
            # Only the short fixed message: the error never carries the token.
            raise SocketRefused(CLOSE_FORBIDDEN, err.message, "ws_" + err.code.lower()) from None
        slot = await self.socket_slots.acquire(principal, services.redis)
        if slot is None:
            raise SocketRefused(CLOSE_TOO_MANY, "Too many open sockets", REJECT_TOO_MANY_SOCKETS)
        context.socket_slot = slot
        context.authenticate(principal)
        OPEN_SOCKETS[id(context)] = context
        # A timer, not a task per socket; cancelled when the socket closes (wslimits.py).
        loop = asyncio.get_running_loop()
        left = max(0.0, principal.expires_at - time.time())
        context.expiry = loop.call_at(loop.time() + left, _expire, context)

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    def decode_json(self, data: str | bytes) -> object:
        # orjson shares the key strings of every message it decodes; a socket keeps its
        # subscribe message for its whole life. (orjson.JSONDecodeError is json's.)
        return orjson.loads(data)
