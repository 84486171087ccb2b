"""Fixtures on real servers: PostgreSQL and Redis from C360_TEST_*_URL, else embedded ones.

Every test run gets a fresh database; every test gets its own tenant, so tests never see
each other's rows and need no cleanup.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from joserfc import jwt
from joserfc.jwk import OctKey
from sqlalchemy import make_url, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from starlette.applications import Starlette

from customer360.app import create_app
from customer360.data.crypto import Keyring
from customer360.data.db import make_engine
from customer360.data.keys import TenantKeys
from customer360.data.migrate import grant_application_role, upgrade_async
from customer360.devstack import embedded_kafka, embedded_postgres, embedded_redis, free_port
from customer360.gql.fastpath import MISMATCHES, SHORT_READS
from customer360.settings import Settings
from customer360.tls import KEEP_ALIVE_SECONDS
from tests.helpers import CLIENTS, apply_event, created_event, npm_installed

SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"
ISSUER, AUDIENCE = "c360-dev", "customer360"
# Two master keys, as after a rotation: "t2" wraps, both unwrap.
DATA_KEY = "t2:MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjI=,t1:MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE="  # noqa: E501


def asyncpg_url(url: str) -> str:
    u = make_url(url)
    if u.drivername in ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2"):
        u = u.set(drivername="postgresql+asyncpg")
    return u.render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def pg_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("C360_TEST_DATABASE_URL")
    if url:
        yield asyncpg_url(url)
        return
    with embedded_postgres(tmp_path_factory.mktemp("pg"), database="postgres") as u:
        yield u


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("C360_TEST_REDIS_URL")
    if url:
        yield url
        return
    with embedded_redis(tmp_path_factory.mktemp("redis")) as u:
        yield u


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    url = os.environ.get("C360_TEST_KAFKA_BOOTSTRAP")
    if url:
        yield url
        return
    with embedded_kafka() as bootstrap:
        yield bootstrap


@contextlib.asynccontextmanager
async def scratch_database(
    server_url: str, prefix: str, *, migrate: bool = True
) -> AsyncIterator[str]:
    """A database of its own on the test server (migrated to head unless told not to),
    dropped afterwards; yields its URL, as the server's user."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    try:
        if migrate:
            await upgrade_async(url)
        yield url
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()


@pytest.fixture(scope="session")
async def database_url(pg_server_url: str) -> AsyncIterator[str]:
    async with scratch_database(pg_server_url, "c360_test") as url:
        yield url


APP_ROLE = "c360_test_app"


@pytest.fixture(scope="session")
async def app_database_url(database_url: str) -> str:
    """The gateway's connection: a role that is neither the tables' owner nor a superuser,
    so row-level security applies to it as in production (the owner's `engine` fixture,
    a superuser here, sets up and inspects data past it)."""
    admin = create_async_engine(database_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        exists = (
            await conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": APP_ROLE})
        ).first()
        if not exists:
            with contextlib.suppress(DBAPIError):  # a parallel session made it meanwhile
                await conn.execute(text(f"CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS"))
    await admin.dispose()
    url = make_url(database_url).set(username=APP_ROLE).render_as_string(hide_password=False)
    await asyncio.to_thread(grant_application_role, database_url, url)
    return url


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    keys = TenantKeys(Keyring.parse(DATA_KEY))
    e = make_engine(database_url, pool_size=20, max_overflow=40, keys=keys)
    yield e
    await e.dispose()


@pytest.fixture(scope="session")
def settings(app_database_url: str, redis_url: str, kafka_bootstrap: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="development",
        database_url=app_database_url,
        redis_url=redis_url,
        kafka_bootstrap=kafka_bootstrap,
        jwt_secret=SECRET,
        data_key=DATA_KEY,
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        db_pool_size=20,
        db_max_overflow=20,
        # every query the suite sends is answered by the compiled path AND by strawberry,
        # and the two must agree (check_compiled below)
        graphql_compiled="verify",
        # webhooks to the tests' own receivers on 127.0.0.1, retried within seconds
        webhook_dev_targets=True,
        webhook_retry_schedule=[0.3, 0.6, 1.0, 1.0, 1.0],
        webhook_timeout_seconds=1.0,
        webhook_disable_after_failures=6,
        webhook_disable_after_seconds=0,
        webhook_poll_seconds=0.1,
    )


@pytest.fixture(autouse=True)
def check_compiled() -> Iterator[None]:
    """The differential test of every document a test sent: the compiled path answered
    exactly as strawberry did."""
    seen, short = len(MISMATCHES), len(SHORT_READS)
    yield
    found = MISMATCHES[seen:]
    del MISMATCHES[seen:]
    unread = SHORT_READS[short:]
    del SHORT_READS[short:]
    assert not found, f"compiled path and strawberry disagree: {found[0]}"
    assert not unread, f"a field read a column it does not declare (projection.py): {unread[0]}"


@dataclass
class Server:
    url: str
    app: Starlette

    @property
    def engine(self) -> AsyncEngine:
        engine: AsyncEngine = self.app.state.services.engine
        return engine


def serve_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a `c360 serve` subprocess on the suite's backends (no Kafka)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("C360_", "PROMETHEUS_"))}
    env.update(
        C360_DATABASE_URL=settings.database_url or "",
        C360_REDIS_URL=settings.redis_url or "",
        C360_KAFKA_BOOTSTRAP="off",
        C360_DATA_KEY=DATA_KEY,
        C360_JWT_SECRET=SECRET,
        **extra,
    )
    return env


async def until_healthy(http: httpx.AsyncClient, tries: int = 300) -> None:
    """Until the server behind `http` answers /healthz (a subprocess starting)."""
    for _ in range(tries):
        try:
            if (await http.get("/healthz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def run_server(app: Starlette, port: int | None = None, **options: Any) -> AsyncIterator[str]:
    port = port or free_port()
    # As served (tls.server_options): httpx's pooled connections expire before the server's.
    options.setdefault("timeout_keep_alive", KEEP_ALIVE_SECONDS)
    server = uvicorn.Server(
        uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", **options
        )
    )
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="session")
async def server(settings: Settings) -> AsyncIterator[Server]:
    app = create_app(settings)
    async with run_server(app) as url:
        yield Server(url, app)


@pytest.fixture(scope="session")
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as client:
        yield client


def make_token(
    sub: str = "user-1",
    tenant: str = "t-1",
    roles: tuple[str, ...] = ("ROLE_ACCOUNT_MANAGER",),
    *,
    ttl: int = 600,
    secret: str = SECRET,
    header: dict[str, Any] | None = None,
    drop: tuple[str, ...] = (),
    **extra: Any,
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": sub,
        "tenant_id": tenant,
        "roles": list(roles),
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + ttl,
    }
    claims.update(extra)
    for key in drop:
        claims.pop(key, None)
    return jwt.encode(header or {"alg": "HS256", "typ": "JWT"}, claims, OctKey.import_key(secret))


@dataclass
class Api:
    """A client as a front end or an integrator uses it: real HTTP, real tokens."""

    http: httpx.AsyncClient
    tenant: str
    sub: str = "user-1"
    roles: tuple[str, ...] = ("ROLE_ACCOUNT_MANAGER",)

    def as_(
        self, roles: tuple[str, ...] | str, sub: str | None = None, tenant: str | None = None
    ) -> Api:
        roles = (roles,) if isinstance(roles, str) else roles
        return Api(self.http, tenant or self.tenant, sub or self.sub, roles)

    @property
    def token(self) -> str:
        return make_token(self.sub, self.tenant, self.roles)

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **extra}

    async def gql(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """POST a document; returns the JSON body (asserting a 200)."""
        resp = await self.http.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers=headers or self.headers(),
        )
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    async def patch(self, customer_id: Any, body: Any, **headers: str) -> httpx.Response:
        return await self.http.patch(
            f"/api/v1/customers/{customer_id}/lifecycle", json=body, headers=self.headers(**headers)
        )


@pytest.fixture(scope="session")
def node_clients() -> Path:
    """tests/clients with its locked packages installed (`npm ci`, once per lock)."""
    return npm_installed(CLIENTS)


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def api(http: httpx.AsyncClient, tenant: str) -> Api:
    return Api(http, tenant)


@pytest.fixture
def make_customer(engine: AsyncEngine, tenant: str) -> Any:
    async def make(tenant_id: str | None = None, **data: Any) -> uuid.UUID:
        ev = created_event(tenant_id or tenant, **data)
        await apply_event(engine, ev)
        return uuid.UUID(ev["data"]["customer_id"])

    return make
