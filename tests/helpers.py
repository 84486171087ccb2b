"""What the tests share: builders of commands and events, the use cases on the test
database, and small readers of API answers. Fixtures live in conftest.py."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from customer360.auth.ratelimit import Unlimited
from customer360.data.chain import seal_all
from customer360.lifecycle import ChangeResult, ChangeStage, DomainError, Source
from customer360.usecases import Outcome, UseCases

# The contract's default configuration (section 5), as a client sees it.
DEFAULT_STAGES = ["Prospect", "Onboarded", "Active", "At-Risk", "Churned"]


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def error_of(body: dict[str, Any]) -> dict[str, Any]:
    """The first GraphQL error's extensions (asserting there is an error)."""
    assert body.get("errors"), body
    ext: dict[str, Any] = body["errors"][0].get("extensions") or {}
    return ext


def new_tenant(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def move(api: Any, cid: Any, stage: str, reason: str | None = None) -> int:
    """Set up a stage through the REST shim (each API's own writes are tested on their own);
    returns the customer's version after it."""
    body: dict[str, Any] = {"stage": stage}
    if reason is not None:
        body["reason_code"] = reason
    resp = await api.patch(cid, body)
    assert resp.status_code == 200, resp.text
    assert resp.json()["stage"] == stage
    version: int = resp.json()["version"]
    return version


# --- the clients front-end engineers use (Node, tests/clients) --------------------------

CLIENTS = Path(__file__).resolve().parent / "clients"


def npm_installed(folder: Path) -> Path:
    """`folder` with its locked npm packages installed (`npm ci`, once per lock)."""
    assert shutil.which("node"), f"Node.js is needed for {folder.name}"
    stamp = folder / "node_modules" / ".installed-lock"
    lock = (folder / "package-lock.json").read_text()
    if not stamp.exists() or stamp.read_text() != lock:
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=folder,
            check=True,
            timeout=600,
        )
        stamp.write_text(lock)
    return folder


async def run_node(script: str, env: dict[str, str], timeout: float = 60) -> dict[str, Any]:
    """Runs a script of tests/clients (development builds, so the libraries warn as they do
    in a developer's browser); returns the JSON object it prints last."""
    proc = await asyncio.create_subprocess_exec(
        "node",
        "--conditions=development",
        script,
        cwd=CLIENTS,
        env={**os.environ, "NODE_ENV": "development", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode == 0, err.decode()[-3000:]
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


# --- the use cases, below the APIs -------------------------------------------------------


class StageChanges:
    """Where `use_cases` runs stage changes: on the engine (None), or on this asyncpg pool
    (data/uow.DriverUnitOfWork, as the gateway does). Set by the `stage_changes` fixture."""

    pool: asyncpg.Pool | None = None


def use_cases(engine: AsyncEngine) -> UseCases:
    """The use cases on the owner's engine, outside any principal's hourly budget."""
    uc = UseCases(engine, limiter=Unlimited())
    uc.pool = StageChanges.pool
    return uc


async def seal(engine: AsyncEngine) -> int:
    """What the gateway's sealer does after commits (events/sealer.py), for tests that write
    with no gateway running: every committed unlinked history row sealed."""
    sealed = 0
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("SELECT set_config('app.scope', 'system', false)"))
        while n := await seal_all(conn):
            sealed += n
        await conn.invalidate()  # the session setting never goes back to the pool
    return sealed


async def unpublished(engine: AsyncEngine, sink: str, tenant: str | None = None) -> int:
    """What the sink marking `sink` (an outbox column: `redis_published_at`, `published_at`)
    has still to publish, of one tenant or all: its outbox rows, and the audit events queued
    with their changes, whose outbox rows their seal writes (migration 0017)."""
    of = "" if tenant is None else " AND tenant_id = :t"
    query = text(
        f"SELECT (SELECT count(*) FROM outbox WHERE {sink} IS NULL{of}) "
        f"+ (SELECT count(*) FROM history_unsealed WHERE outbox_id IS NOT NULL{of})"
    )
    async with engine.connect() as c:
        return int((await c.execute(query, {"t": tenant})).scalar_one())


def command(tenant: str, cid: uuid.UUID, stage: str, **kw: Any) -> ChangeStage:
    return ChangeStage(tenant, cid, stage, "user-1", Source.UI, **kw)


async def change(engine: AsyncEngine, cmd: ChangeStage) -> ChangeResult:
    """One stage change; raises its DomainError."""
    (outcome,) = (await use_cases(engine).update_stages([cmd])).outcomes
    if isinstance(outcome, DomainError):
        raise outcome
    return outcome


async def apply_event(engine: AsyncEngine, ev: Any) -> Outcome:
    return await use_cases(engine).apply_event(ev)


# --- CloudEvents ---------------------------------------------------------------------------

_seq = iter(range(10**9))


def event(
    type_: str,
    tenant: str | None,
    data: dict[str, Any],
    *,
    source: str = "crm",
    event_id: str | None = None,
) -> dict[str, Any]:
    ev: dict[str, Any] = {
        "specversion": "1.0",
        "id": event_id or uuid.uuid4().hex,
        "source": source,
        "type": type_,
        "time": "2025-07-28T12:00:00Z",
        "data": data,
    }
    if tenant is not None:
        ev["tenantid"] = tenant
    return ev


def created_event(tenant: str, customer_id: uuid.UUID | None = None, **data: Any) -> dict[str, Any]:
    cid = customer_id or uuid.uuid4()
    payload = {
        "customer_id": str(cid),
        "name": f"Customer {next(_seq)}",
        "email": f"c{uuid.uuid4().hex[:8]}@example.com",
        "phone": "+1 555 0100",
        "company_name": "Acme Corp",
        "tier": "PRO",
        "tags": ["vip"],
        "assigned_to": "user-1",
    }
    payload.update(data)
    return event("customer.created", tenant, payload)


def renewed_event(
    tenant: str,
    customer_id: Any,
    *,
    contract_id: str = "K",
    renewed_at: str = "2025-07-01T10:00:00Z",
    **kw: Any,
) -> dict[str, Any]:
    data = {"customer_id": str(customer_id), "contract_id": contract_id, "renewed_at": renewed_at}
    return event("contract.renewed", tenant, data, **kw)


async def read_topic(
    bootstrap: str,
    topic: str,
    until: Callable[[list[ConsumerRecord[bytes, bytes]]], bool],
    *,
    timeout: float = 20.0,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Read `topic` from its beginning until `until(every record read so far)` holds, or
    `timeout` passes; returns the records read."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    seen: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout
        while not until(seen) and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                seen.extend(records)
            await asyncio.sleep(0)
    finally:
        await consumer.stop()
    return seen


# --- TLS ---------------------------------------------------------------------------------


def make_certificates(folder: Path, *, host: str = "localhost") -> dict[str, Path]:
    """A CA of the test's own and a server certificate it signed, for `host` and 127.0.0.1,
    as PEM files in `folder`: {"ca", "cert", "key"}."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def build(subject: str, issuer: x509.Name | None, key: Any, signer: Any) -> Any:
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
        builder = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(issuer or name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
        )
        if issuer is None:
            builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        else:
            alt = [x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(alt), False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = build("c360 test CA", None, ca_key, ca_key)
    cert = build(host, ca.subject, key, ca_key)
    paths = {"ca": folder / "ca.pem", "cert": folder / "server.pem", "key": folder / "server.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    paths["key"].chmod(0o600)
    return paths


# --- generated documents -----------------------------------------------------------------


def examples(strategy: st.SearchStrategy[Any], count: int) -> list[Any]:
    """`count` values drawn from `strategy`, the same ones every run (hypothesis-graphql's
    documents for the differential tests)."""
    out: list[Any] = []

    @settings(
        max_examples=count,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: Any) -> None:
        out.append(value)

    collect()
    return out
