"""`c360`: the command line of the gateway (CONTRACT section 8)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import uvicorn
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from customer360.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from customer360.usecases import UseCases

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
err = Console(stderr=True)
ROLES = ["ROLE_CUSTOMER_VIEWER", "ROLE_ACCOUNT_MANAGER", "ROLE_TENANT_ADMIN", "ROLE_SUPER_ADMIN"]
DEMO_TENANT = "demo"


def _settings() -> Settings:
    return Settings()


def _dev_secret(settings: Settings) -> str:
    """C360_JWT_SECRET, or a development secret kept beside the embedded data."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value()
    path = settings.data_dir / "dev-jwt-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


def _role(name: str) -> str:
    name = name.upper()
    return name if name.startswith("ROLE_") else f"ROLE_{name}"


def _need(url: str | None, name: str) -> str:
    if not url:
        err.print(f"[red]{name} is not set[/red]")
        raise typer.Exit(1)
    return url


@app.command()
def token(
    sub: Annotated[str, typer.Option(help="The token's subject")],
    tenant: Annotated[str, typer.Option(help="tenant_id claim")],
    role: Annotated[list[str], typer.Option(help="Role, with or without ROLE_ (repeatable)")],
    ttl: Annotated[int, typer.Option(help="Lifetime in seconds")] = 3600,
) -> None:
    """Print a signed development token (HS256 with C360_JWT_SECRET)."""
    from customer360.auth.tokens import issue_dev_token

    s = _settings()
    print(
        issue_dev_token(
            _dev_secret(s),
            sub=sub,
            tenant=tenant,
            roles=[_role(r) for r in role],
            issuer=s.jwt_issuer,
            audience=s.jwt_audience,
            ttl=ttl,
        )
    )


@app.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    from customer360.data.migrate import grant_application_role, upgrade

    s = _settings()
    owner = _need(s.migration_database_url or s.database_url, "C360_DATABASE_URL")
    upgrade(owner)
    err.print("schema is up to date")
    if s.database_url:
        role = grant_application_role(owner, s.database_url)
        if role:
            err.print(f"granted table access to role {role}")
    sealed = asyncio.run(_seal_plaintext(owner, s))
    if sealed:
        err.print(f"sealed personal data of {sealed} customers stored before encryption")


@contextlib.asynccontextmanager
async def _engine(
    url: str, settings: Settings | None = None, **pool: Any
) -> AsyncIterator[AsyncEngine]:
    """An engine for one command, disposed when it ends. With `settings`, it seals and opens
    personal data with the configured keyring (a bad C360_DATA_KEY ends the command)."""
    from customer360.data.crypto import KeyringError
    from customer360.data.db import make_engine
    from customer360.data.keys import TenantKeys

    keys = None
    if settings is not None:
        try:
            keys = TenantKeys(settings.keyring())
        except KeyringError as exc:
            err.print(f"[red]{exc}[/red]")
            raise typer.Exit(1) from None
    engine = make_engine(url, keys=keys, **pool)
    try:
        yield engine
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def _usecases(url: str, settings: Settings) -> AsyncIterator[UseCases]:
    """The use cases, on a small keyed engine of this command's own. What it changes wakes
    the gateways' sealer (`c360 ingest`: the UI sees it at once, not at the next poll)."""
    from customer360.events.sealer import Sealer
    from customer360.usecases import UseCases

    async with _engine(url, settings, pool_size=2, max_overflow=0) as engine:
        sealer = Sealer(engine)
        try:
            yield UseCases(engine, on_history=sealer.poke)
        finally:
            await sealer.close()


async def _seal_plaintext(url: str, settings: Settings) -> int:
    async with _usecases(url, settings) as usecases:
        return await usecases.seal_plaintext()


def _run_seed(url: str, tenant: str, customers: int, settings: Settings) -> int:
    from customer360.data.seed import seed

    try:
        import faker  # noqa: F401
    except ImportError:
        err.print("[red]seeding needs the seed extra: pip install 'customer360[seed]'[/red]")
        raise typer.Exit(1) from None

    async def go() -> int:
        async with _engine(url, settings) as engine:
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=err,
                disable=customers < 1,
            ) as bar:
                task = bar.add_task(f"seeding {tenant}", total=customers)
                return await seed(
                    engine, tenant, customers, progress=lambda n: bar.advance(task, n)
                )

    return asyncio.run(go())


@app.command("seed")
def seed_cmd(
    tenant: Annotated[str, typer.Option(help="Tenant to fill")] = DEMO_TENANT,
    customers: Annotated[int, typer.Option(help="How many customers", min=0)] = 200,
) -> None:
    """Load realistic demo or load-test data, with a progress bar; then ANALYZE it."""
    s = _settings()
    n = _run_seed(_need(s.database_url, "C360_DATABASE_URL"), tenant, customers, s)
    _analyze(s)
    err.print(f"seeded {n} customers into tenant {tenant}")


# An ingest run this large ends with ANALYZE, as a seed does.
INGEST_ANALYZE_MIN = 1000


def _analyze(settings: Settings) -> None:
    """Planner statistics for what a bulk load just wrote (as the tables' owner)."""
    from customer360.data.db import analyze

    async def go() -> None:
        async with _engine(_owner_url(settings), pool_size=1, max_overflow=0) as engine:
            await analyze(engine)

    asyncio.run(go())


@app.command()
def ingest(
    file: Annotated[str, typer.Argument(help="JSON-lines file of CloudEvents, or -")] = "-",
) -> None:
    """Apply CloudEvents through the use case the Kafka consumers use."""
    from customer360.usecases import EventRejected, Outcome

    s = _settings()
    url = _need(s.database_url, "C360_DATABASE_URL")
    stream = sys.stdin.buffer if file == "-" else Path(file).open("rb")
    tally = {"applied": 0, "duplicate": 0, "rejected": 0}

    async def go() -> None:
        async with _usecases(url, s) as usecases:
            for n, line in enumerate(stream, start=1):
                if not line.strip():
                    continue
                try:
                    outcome = await usecases.apply_event(line)
                except EventRejected as exc:
                    tally["rejected"] += 1
                    print(f"line {n}: {exc}", file=sys.stderr)
                else:
                    tally["applied" if outcome is Outcome.APPLIED else "duplicate"] += 1

    try:
        asyncio.run(go())
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()
    if tally["applied"] >= INGEST_ANALYZE_MIN:
        _analyze(s)
    print(" ".join(f"{k}={v}" for k, v in tally.items()))
    raise typer.Exit(2 if tally["rejected"] else 0)


@app.command("kafka-topics")
def kafka_topics(
    partitions: Annotated[int, typer.Option(min=1, help="Of each consumed and produced topic")] = 6,
    dlq_partitions: Annotated[int, typer.Option(min=1)] = 1,
    replication: Annotated[int, typer.Option(min=1)] = 1,
    dlq_retention_ms: Annotated[
        int, typer.Option(help="How long dead letters are kept (default 14 days)")
    ] = 14 * 24 * 3600 * 1000,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the broker")] = 60.0,
) -> None:
    """Create the Kafka topics the gateway uses (consumed, their .dlq, the audit topic)."""
    import time

    from customer360.events.kafka import ensure_topics
    from customer360.tls import kafka_options

    s = _settings()
    bootstrap = _need(s.kafka_bootstrap, "C360_KAFKA_BOOTSTRAP")
    deadline = time.monotonic() + wait
    while True:
        try:
            created = asyncio.run(
                ensure_topics(
                    bootstrap,
                    partitions,
                    dlq_partitions=dlq_partitions,
                    replication=replication,
                    dlq_retention_ms=dlq_retention_ms,
                    security=kafka_options(s),
                )
            )
            break
        except Exception as exc:
            if time.monotonic() > deadline:
                err.print(f"[red]Kafka at {bootstrap} unreachable: {type(exc).__name__}[/red]")
                raise typer.Exit(1) from None
            time.sleep(2)
    print(f"created: {' '.join(created) or 'none (all exist)'}")


audit_app = typer.Typer(no_args_is_help=True, help="The tamper-evident lifecycle history.")
app.add_typer(audit_app, name="audit")


def _owner_url(s: Settings) -> str:
    return _need(s.migration_database_url or s.database_url, "C360_DATABASE_URL")


@audit_app.command("verify")
def audit_verify(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant")] = None,
) -> None:
    """Walk the hash chain of lifecycle history; exit 1 naming the first altered row."""
    from customer360.data.audit import verify

    url = _owner_url(_settings())

    async def go() -> Any:
        async with _engine(url, pool_size=1, max_overflow=0) as engine:
            return await verify(engine, tenant)

    verdict = asyncio.run(go())
    for b in verdict.broken:
        what = "tampered" if b.tampered else "unsealed"
        print(
            f"{what}: tenant {b.tenant_id} row {b.row_id} (position {b.position}): {b.why}",
            file=sys.stderr,
        )
    if verdict.broken:
        raise typer.Exit(1)
    waiting = f", {verdict.unsealed} awaiting their seal" if verdict.unsealed else ""
    print(f"ok: {verdict.rows} rows verified{waiting}")


keys_app = typer.Typer(no_args_is_help=True, help="Master keys of the encrypted columns.")
app.add_typer(keys_app, name="keys")


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Re-wrap every tenant's data key with the newest (first) master key, online."""
    s = _settings()
    url = _need(s.database_url, "C360_DATABASE_URL")

    async def go() -> int:
        async with _usecases(url, s) as usecases:
            return await usecases.rotate_keys()

    n = asyncio.run(go())
    print(f"rotated: {n} tenant keys now wrapped by {s.keyring().primary}")


@app.command()
def erase(
    tenant: Annotated[str, typer.Option(help="The tenant")],
    customer: Annotated[str | None, typer.Option(help="Only this customer (its id)")] = None,
) -> None:
    """Make the personal data of one customer, or of a whole tenant, unreadable."""
    import uuid

    s = _settings()
    url = _need(s.database_url, "C360_DATABASE_URL")
    try:
        cid = None if customer is None else uuid.UUID(customer)
    except ValueError:
        err.print(f"[red]--customer {customer!r} is not a customer id[/red]")
        raise typer.Exit(2) from None

    async def go() -> int:
        async with _usecases(url, s) as usecases:
            return await usecases.erase(tenant, cid)

    n = asyncio.run(go())
    if cid is not None and n == 0:
        err.print(f"[red]no customer {cid} in tenant {tenant}[/red]")
        raise typer.Exit(1)
    what = f"customer {cid}" if cid else f"tenant {tenant} ({n} customers; its data key destroyed)"
    print(f"erased: {what}")


@app.command("export")
def export_cmd(
    tenant: Annotated[str, typer.Option(help="The tenant")],
    customer: Annotated[str, typer.Option(help="The customer's id")],
    out: Annotated[Path | None, typer.Option(help="Write here (mode 600), not to stdout")] = None,
    actor: Annotated[str, typer.Option(help="Who asks, for the export record")] = "cli",
) -> None:
    """Everything held about one customer, as JSON (GDPR art. 15/20); the export is recorded."""
    import json
    import uuid

    s = _settings()
    url = _need(s.database_url, "C360_DATABASE_URL")
    try:
        cid = uuid.UUID(customer)
    except ValueError:
        err.print(f"[red]--customer {customer!r} is not a customer id[/red]")
        raise typer.Exit(2) from None

    async def go() -> dict[str, Any] | None:
        async with _usecases(url, s) as usecases:
            found = await usecases.export_customer(tenant, cid, actor, "cli")
            return None if found is None else found.document()

    doc = asyncio.run(go())
    if doc is None:
        err.print(f"[red]no customer {cid} in tenant {tenant}[/red]")
        raise typer.Exit(1)
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    # Personal data: readable by its owner only, from the first byte.
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    err.print(f"exported customer {cid} to {out}")


@app.command("export-schema")
def export_schema() -> None:
    """Print the GraphQL SDL (the committed schema.graphql must equal it)."""
    from customer360.gql.schema import build_schema

    print(build_schema().as_str())


@app.command()
def serve(
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Default: one per whole CPU of the container's quota"),
    ] = None,
) -> None:
    """Serve on the configured backends (production)."""
    from customer360.cpus import default_workers

    workers = workers or default_workers()
    s = _settings()
    problems = s.production_problems() if s.production else s.tls_problems()
    if problems:
        for p in problems:
            err.print(f"[red]refusing to start:[/red] {p}")
        raise typer.Exit(1)
    from customer360.metrics import prepare_workers

    prepare_workers(workers)  # before anything imports prometheus-client
    from customer360.observability import configure_logging

    configure_logging(s.log_level)
    from customer360.tls import server_options

    uvicorn.run(
        "customer360.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        access_log=False,
        **server_options(s),
    )


@app.command()
def dev(
    port: Annotated[int, typer.Option()] = 8000,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
    demo_customers: Annotated[int, typer.Option(help="Demo tenant size on first start")] = 500,
) -> None:
    """Everything on one machine: embedded servers where no URL is set, demo data, tokens."""
    from customer360.app import create_app
    from customer360.auth.tokens import issue_dev_token
    from customer360.data.migrate import grant_application_role, upgrade
    from customer360.data.seed import tenant_has_customers
    from customer360.devstack import dev_backends
    from customer360.observability import configure_logging
    from customer360.tls import server_options

    s = _settings()
    if s.production:
        err.print("[red]c360 dev is for development; use c360 serve[/red]")
        raise typer.Exit(1)
    configure_logging(s.log_level)
    secret = _dev_secret(s)
    os.environ["C360_JWT_SECRET"] = secret
    with dev_backends(s.data_dir.resolve(), s.database_url, s.redis_url, s.kafka_bootstrap) as (
        db,
        rd,
        kafka,
    ):
        owner = s.migration_database_url or db
        upgrade(owner)
        grant_application_role(owner, db)  # as `c360 migrate` does; a no-op for one role
        settings = s.model_copy(
            update={
                "database_url": db,
                "redis_url": rd,
                "kafka_bootstrap": kafka,
                "jwt_secret": s.jwt_secret or secret,
            }
        )
        settings = Settings.model_validate(settings.model_dump())

        async def has_demo() -> bool:
            async with _engine(db, pool_size=1, max_overflow=0) as engine:
                return await tenant_has_customers(engine, DEMO_TENANT)

        if not asyncio.run(has_demo()):
            _run_seed(db, DEMO_TENANT, demo_customers, settings)
            _analyze(settings)
        base = f"{'https' if settings.tls_terminated else 'http'}://{host}:{port}"
        err.print(f"\n[bold]Customer360 gateway[/bold]  GraphiQL: {base}/graphql\n")
        for role in ROLES:
            tok = issue_dev_token(
                secret,
                sub=f"dev-{role[5:].lower()}",
                tenant=DEMO_TENANT,
                roles=[role],
                issuer=s.jwt_issuer,
                audience=s.jwt_audience,
                ttl=12 * 3600,
            )
            print(f"{role}:\n  Bearer {tok}", flush=True)
            if settings.web_app_enabled:
                print(f"  Customer360 tab: {base}/app/#token={tok}", flush=True)
        print(f"ready: {base}/graphql", flush=True)
        uvicorn.run(
            create_app(settings),
            host=host,
            port=port,
            log_config=None,
            access_log=False,
            **server_options(settings),
        )


def main() -> None:
    app()


if __name__ == "__main__":
    main()
