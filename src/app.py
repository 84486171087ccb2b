"""Composition root: everything is built in the lifespan, nothing at import time."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from customer360 import rest
from customer360.auth.ratelimit import RateLimiter
from customer360.auth.tokens import TokenVerifier
from customer360.cors import Cors
from customer360.data.cache import Cache
from customer360.data.db import driver_pool, make_engine
from customer360.data.keys import TenantKeys
from customer360.data.queries import Reads
from customer360.edge import BodyLimit, GraphQLPost
from customer360.events.hub import Hub
from customer360.events.runtime import KafkaLink, background, webhook_policy
from customer360.events.sealer import Sealer
from customer360.gql.fastpath import FastPath
from customer360.gql.limits import CLOSE_TOO_BIG
from customer360.gql.schema import build_schema
from customer360.gql.view import STATIC, GraphQLApp, recheck_sockets
from customer360.metrics import exposition, process_metrics
from customer360.observability import (
    REJECTED,
    MetricsMiddleware,
    gc_monitor,
    get_logger,
)
from customer360.openapi import SPEC
from customer360.settings import Settings
from customer360.tls import StrictTransportSecurity
from customer360.tracing import configure as configure_tracing
from customer360.usecases import UseCases
from customer360.webapp import routes as web_app_routes
from customer360.workers import end_with_supervisor, stopping

if TYPE_CHECKING:
    from customer360.tracing import Tracing

log = get_logger("customer360.app")
# How often the token keys are looked at (a file's stamp, a URL's age): cheap, and bounds
# how long a withdrawn key stays accepted beyond its cache lifetime.
KEY_CHECK_SECONDS = 30.0
# c360_requests_rejected_total{reason} for a WebSocket message over the limit.
REJECT_TOO_BIG = "ws_message_too_large"


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    redis: aioredis.Redis
    verifier: TokenVerifier
    reads: Reads
    hub: Hub
    kafka: KafkaLink | None
    usecases: UseCases
    tracing: Tracing | None = None


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _check(coro: Awaitable[object]) -> str:
    try:
        await asyncio.wait_for(coro, timeout=2.0)
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    return "ok"


async def _off() -> str:
    return "off"


async def readyz(request: Request) -> Response:
    services: Services = request.app.state.services
    kafka = services.kafka
    pg, rd, kf = await asyncio.gather(
        _check(services.reads.ping()),
        _check(services.redis.ping()),
        _check(kafka.check()) if kafka is not None else _off(),
    )
    checks = {"postgres": pg, "redis": rd, "kafka": kf}
    # Kafka alone down keeps the instance in rotation: changes still commit to the outbox and
    # are published when it returns.
    if pg != "ok" or rd != "ok":
        status, code = "unavailable", 503
    else:
        status, code = ("ready", 200) if kf in ("ok", "off") else ("degraded", 200)
    return JSONResponse({"status": status, "checks": checks}, status_code=code)


async def metrics(request: Request) -> Response:
    return Response(exposition(), media_type=CONTENT_TYPE_LATEST)


async def favicon(request: Request) -> Response:
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


async def openapi(request: Request) -> Response:
    return JSONResponse(SPEC)


async def internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled", path=request.url.path, error=type(exc).__name__)
    message = "Internal server error"
    if request.url.path.startswith("/api/"):
        return JSONResponse(
            {
                "success": False,
                "error": {"code": "INTERNAL_SERVER_ERROR", "message": message, "details": {}},
            },
            500,
        )
    return JSONResponse(
        {"errors": [{"message": message, "extensions": {"code": "INTERNAL_SERVER_ERROR"}}]}, 500
    )


async def watch_token_keys(verifier: TokenVerifier, every: float) -> None:
    """Picks up a changed JWKS (URL when due, file when rewritten); sockets whose token a
    withdrawn key signed are closed (4403) at once."""
    while True:
        await asyncio.sleep(every)
        try:
            changed = await verifier.refresh_keys()
        except Exception as exc:
            log.warning("token keys refresh failed", error=type(exc).__name__)
            continue
        if changed:
            closed = await recheck_sockets(verifier)
            log.info("token keys changed", sockets_closed=closed)


class Gateway(Starlette):
    """Starlette, with WebSockets on /graphql handed straight to the GraphQL app, and POST
    /graphql to `graphql_post` (edge.py) when there is one.

    A socket lives for hours; every ASGI layer it passes through (error and exception
    middleware, metrics, body limit, router, route wrappers) keeps a suspended frame on its
    stack all that time: about 3 KB per idle subscription, for layers that serve HTTP only.
    A POST is short, but nearly all the traffic: the same layers cost it about a fifth of a
    worker's time, and GraphQLPost does what they do in one frame.
    """

    def __init__(
        self, *args: Any, websocket_app: ASGIApp, graphql_post: ASGIApp | None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.websocket_app = websocket_app
        self.graphql_post = graphql_post

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if (
            kind == "http"
            and scope["method"] == "POST"
            and scope["path"] == "/graphql"
            and self.graphql_post is not None
            and not scope.get("root_path")  # the router would match on the path below it
        ):
            scope["app"] = self
            await self.graphql_post(scope, receive, send)
            return
        if kind == "websocket" and scope["path"] == "/graphql":
            scope["app"] = self

            async def counting() -> Message:
                got = await receive()
                if got["type"] == "websocket.disconnect" and got.get("code") == CLOSE_TOO_BIG:
                    REJECTED.labels(REJECT_TOO_BIG).inc()  # the server refused the message
                return got

            await self.websocket_app(scope, counting, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None, *, tracing: Tracing | None = None) -> Starlette:
    """The gateway; `tracing` is what customer360.tracing.configure made (the tests hand
    their own), else it is made here from the settings: None, nothing traced, by default."""
    end_with_supervisor()  # in a worker of `c360 serve --workers N`
    settings = settings or Settings()
    problems = settings.production_problems()
    if problems:
        raise RuntimeError("refusing a production start: " + "; ".join(problems))
    if not settings.database_url or not settings.redis_url:
        raise RuntimeError("C360_DATABASE_URL and C360_REDIS_URL must be set (c360 dev sets them)")
    if tracing is None:
        tracing = configure_tracing(settings)
    schema = build_schema(
        introspection=settings.introspection_enabled, suggestions=settings.suggestions_enabled
    )
    if tracing is not None:
        # First, so the operation's span covers what the other extensions do.
        schema.extensions = (tracing.graphql_extension, *schema.extensions)
    graphql = GraphQLApp(
        schema,
        graphiql=settings.graphiql_enabled,
        ws_legacy=settings.ws_legacy,
        allowed_origins=settings.allowed_origins,
        ws_max_subscriptions=settings.ws_max_subscriptions,
        ws_max_sockets_per_principal=settings.ws_max_sockets_per_principal,
        ws_init_timeout=timedelta(seconds=settings.ws_init_timeout_seconds),
        fast=FastPath(
            schema,
            settings.graphql_compiled,
            span=tracing.compiled_operation if tracing is not None else None,
        ),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        assert settings.database_url and settings.redis_url
        engine = make_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            keys=TenantKeys(settings.keyring()),
        )
        # Bounded waits: a Redis that went away mid-command (a restart, a half-open
        # connection) fails the command instead of holding it for ever.
        redis = aioredis.Redis.from_url(
            settings.redis_url, socket_timeout=5.0, socket_connect_timeout=5.0
        )
        if tracing is not None:
            tracing.instrument_engine(engine)
            tracing.instrument_redis(redis)
        statement_span = tracing.statement_span if tracing is not None else None
        reads = Reads(engine, cache=Cache(redis), span=statement_span)
        sealer = Sealer(engine)
        usecases = UseCases(
            engine,
            limiter=RateLimiter(redis, settings.rate_limit),
            on_commit=reads.note_written,  # this process never serves its own old writes
            on_history=sealer.poke,
            webhook_policy=webhook_policy(settings),
            statement_span=statement_span,
            write_batches=settings.write_batches,
        )
        try:
            verifier = TokenVerifier(settings)
            background_work = background(settings, engine, redis, usecases, sealer, tracing)
            async with driver_pool(engine, settings.db_read_pool_size) as pool:
                # The hot paths' connections (reads, stage changes), before any consumer runs.
                reads.pool = usecases.pool = pool
                async with background_work as (hub, kafka):
                    app.state.services = Services(
                        settings, engine, redis, verifier, reads, hub, kafka, usecases, tracing
                    )
                    every = min(KEY_CHECK_SECONDS, settings.jwt_jwks_refresh_seconds)
                    watcher = asyncio.create_task(watch_token_keys(verifier, every))
                    log.info(
                        "started", env=settings.env, kafka=kafka is not None, tracing=bool(tracing)
                    )
                    try:
                        async with process_metrics():
                            with gc_monitor():
                                yield
                    finally:
                        stopping()  # in a worker: the stop ends in bounded time, done or not
                        watcher.cancel()
        finally:
            await graphql.socket_slots.close()  # this process's sockets stop counting now
            await sealer.close()
            await redis.aclose()
            await engine.dispose()
            if tracing is not None:
                await tracing.shutdown()  # the spans still batched go out now

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/openapi.json", openapi),
        Route("/favicon.ico", favicon),
        Mount("/graphiql-static", StaticFiles(directory=STATIC)),
        *rest.routes,
        Route("/graphql", graphql, methods=["GET", "POST"]),
        WebSocketRoute("/graphql", graphql),
        *(web_app_routes() if settings.web_app_enabled else []),
    ]
    return Gateway(
        websocket_app=graphql if tracing is None else tracing.untraced(graphql),
        # Traced, every request goes through the tracing middleware: the stack, then.
        graphql_post=(
            GraphQLPost(
                graphql,
                cors=Cors(graphql, origins=settings.allowed_origins),
                on_error=internal_error,
            )
            if tracing is None
            else None
        ),
        routes=routes,
        lifespan=lifespan,
        middleware=[
            # Outermost: the request's span covers everything below it.
            *([tracing.middleware()] if tracing is not None else []),
            Middleware(StrictTransportSecurity),
            Middleware(Cors, origins=settings.allowed_origins),
            Middleware(MetricsMiddleware),
            Middleware(BodyLimit),
        ],
        exception_handlers={Exception: internal_error},
    )
