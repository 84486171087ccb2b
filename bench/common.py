"""What the benchmarks share: backends, the bench database, a served gateway, tokens."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import httpx
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

from customer360.auth.tokens import issue_dev_token
from customer360.data.crypto import Keyring
from customer360.data.db import make_engine
from customer360.data.keys import TenantKeys
from customer360.data.migrate import grant_application_role, upgrade_async
from customer360.data.seed import seed, tenant_has_customers
from customer360.devstack import free_port

SECRET = "bench-secret-0123456789-0123456789-0123456789"
DATA_KEY = "bench:" + base64.b64encode(b"b" * 32).decode()
KEYS = TenantKeys(Keyring.parse(DATA_KEY))

DATABASE = "c360_bench"


def backend_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--database",
        default=os.environ.get(
            "C360_BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        ),
    )
    ap.add_argument(
        "--redis", default=os.environ.get("C360_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    )


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def bench_database(server_url: str, tenant: str, customers: int) -> str:
    """The bench database, created and migrated if needed, with `tenant` seeded once."""
    url = make_url(server_url).set(database=DATABASE).render_as_string(hide_password=False)
    admin = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as c:
        query = text("SELECT 1 FROM pg_database WHERE datname = :d")
        if not (await c.execute(query, {"d": DATABASE})).first():
            await c.execute(text(f'CREATE DATABASE "{DATABASE}"'))
    await admin.dispose()
    await upgrade_async(url)
    engine = make_engine(url, keys=KEYS)
    try:
        if not await tenant_has_customers(engine, tenant):
            await seed(engine, tenant, customers, batch=5000)
    finally:
        await engine.dispose()
    return url


APP_ROLE = "c360_bench_app"


async def app_url(owner_url: str) -> str:
    """The gateway's own connection, as in production: a role that owns nothing and is not a
    superuser, so row-level security applies (and is paid for) in every figure."""
    admin = create_async_engine(owner_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as c:
        query = text("SELECT 1 FROM pg_roles WHERE rolname = :r")
        if not (await c.execute(query, {"r": APP_ROLE})).first():
            await c.execute(text(f"CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS"))
    await admin.dispose()
    url = make_url(owner_url).set(username=APP_ROLE).render_as_string(hide_password=False)
    await asyncio.to_thread(grant_application_role, owner_url, url)
    return url


def token(tenant: str) -> str:
    return issue_dev_token(
        SECRET,
        sub="bench",
        tenant=tenant,
        roles=["ROLE_ACCOUNT_MANAGER"],
        issuer="c360-dev",
        audience="customer360",
        ttl=3600,
    )


@contextlib.asynccontextmanager
async def serving(
    database_url: str, redis_url: str, *, kafka: str = "off", workers: int = 1
) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """`c360 serve` in a subprocess beside the benchmark, ready when yielded."""
    port = free_port()
    env = {
        **os.environ,
        "C360_DATABASE_URL": await app_url(database_url),
        "C360_REDIS_URL": redis_url,
        "C360_KAFKA_BOOTSTRAP": kafka,
        "C360_JWT_SECRET": SECRET,
        "C360_DATA_KEY": DATA_KEY,
        "C360_LOG_LEVEL": "WARNING",
        "C360_RATE_LIMIT": "100000000",  # one bench user makes far more than 1000 updates
        "C360_WS_MAX_SOCKETS_PER_PRINCIPAL": "100000",  # bench/live.py: 1,000 sockets, one user
    }
    proc = subprocess.Popen(  # noqa: ASYNC220 - Popen returns at once; the server runs beside
        [
            sys.executable,
            "-m",
            "customer360.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            for _ in range(300):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/readyz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(10)
