"""Realistic demo and load data, bulk-loaded with COPY.

Seeding writes synthetic *past* history, so it loads rows directly instead of replaying
50,000 customers through the write path; it emits no audit events and keeps every
invariant that path keeps (version = history rows, unbroken chain, stage counts).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from customer360.lifecycle import StageConfig, transition_id

from .keys import keys_of
from .lifecycle import load_stage_config
from .scope import tenant_scope
from .statements import AlchemyExecutor

TIERS = ["FREE", "BASIC", "PRO", "ENTERPRISE"]
TAGS = [
    "vip",
    "smb",
    "enterprise",
    "emea",
    "amer",
    "apac",
    "trial",
    "partner",
    "churn-risk",
    "upsell",
    "onboarding",
    "strategic",
]
REASONS = [
    "Low Engagement",
    "Payment Failed",
    "Champion Left",
    "Budget Cut",
    "Competitor",
    "Renewed",
    "Expansion",
    "Support Escalation",
]
_COUNT = text(
    "INSERT INTO stage_counts (tenant_id, stage, count) VALUES (:t, :s, :n) "
    "ON CONFLICT (tenant_id, stage) DO UPDATE SET count = stage_counts.count + EXCLUDED.count"
)
MANAGERS = [f"user-{n}" for n in range(1, 26)]


def _journey(config: StageConfig, rnd: random.Random) -> list[str]:
    """A plausible walk through the tenant's stages, obeying its transition rules."""
    path = [config.initial_stage]
    for _ in range(rnd.choices([0, 1, 2, 3, 4, 5], [10, 25, 25, 20, 12, 8])[0]):
        options = config.allowed_next_stages(path[-1])
        if not options:
            break
        # Mostly forward through the configured order, sometimes anywhere allowed.
        ahead = [s for s in options if config.stages.index(s) > config.stages.index(path[-1])]
        path.append(ahead[0] if ahead and rnd.random() < 0.7 else rnd.choice(options))
    return path


async def seed(
    engine: AsyncEngine,
    tenant: str,
    customers: int,
    *,
    batch: int = 2000,
    seed_value: int = 7,
    progress: Callable[[int], None] | None = None,
) -> int:
    # faker comes with the `seed` extra only, so the production image can do without it.
    from faker import Faker

    fake = Faker()
    Faker.seed(seed_value)
    rnd = random.Random(seed_value)
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await tenant_scope(conn, tenant)
        config = await load_stage_config(AlchemyExecutor(conn), tenant)
        cipher = await keys_of(engine).for_write(conn, tenant)
    done = 0
    while done < customers:
        n = min(batch, customers - done)
        counts: dict[str, int] = {}
        cust_rows: list[tuple[Any, ...]] = []
        hist_rows: list[tuple[Any, ...]] = []
        metric_rows: list[tuple[Any, ...]] = []
        for _ in range(n):
            cid = uuid.uuid4()  # fresh ids: a second run adds customers, never collides
            created = now - timedelta(days=rnd.uniform(1, 720))
            path = _journey(config, rnd)
            span = (now - created).total_seconds()
            cuts = sorted(rnd.uniform(0, span) for _ in range(len(path) - 1))
            times = [created, *(created + timedelta(seconds=c) for c in cuts)]
            prev: str | None = None
            for version, (stage, at) in enumerate(zip(path, times, strict=True), start=1):
                reason = None
                if prev is not None and (config.requires_reason(stage) or rnd.random() < 0.3):
                    reason = rnd.choice(REASONS)
                source = "SYSTEM" if prev is None else rnd.choice(["UI", "API", "EVENT_LISTENER"])
                actor = "seed" if prev is None else rnd.choice(MANAGERS)
                hist_rows.append(
                    (
                        transition_id(at),
                        tenant,
                        cid,
                        version,
                        prev,
                        stage,
                        at,
                        actor,
                        reason,
                        source,
                        config.version,
                    )
                )
                prev = stage
            last = hist_rows[-1]
            company = fake.company()
            name = fake.name()
            email = fake.unique.email()
            cust_rows.append(
                (
                    tenant,
                    cid,
                    name,
                    cipher.seal(email, cid, "email"),
                    cipher.seal(fake.phone_number()[:32], cid, "phone"),
                    cipher.blind(email),
                    company,
                    rnd.choice(TIERS),
                    rnd.sample(TAGS, rnd.randint(0, 3)),
                    rnd.choice(MANAGERS),
                    created,
                    last[6],
                    path[-1],
                    last[6],
                    last[6],
                    last[7],
                    last[8],
                    last[9],
                    len(path),
                )
            )
            renewals = rnd.randint(0, 4)
            closed = rnd.randint(0, 6)
            metric_rows.append(
                (
                    tenant,
                    cid,
                    rnd.randint(0, 3),
                    closed,
                    now - timedelta(days=rnd.uniform(0, 90)) if closed else None,
                    renewals,
                    now - timedelta(days=rnd.uniform(0, 365)) if renewals else None,
                )
            )
            counts[path[-1]] = counts.get(path[-1], 0) + 1
        async with engine.begin() as conn:
            await tenant_scope(conn, tenant)
            await _copy(
                conn,
                "customers",
                records=cust_rows,
                columns=[
                    "tenant_id",
                    "id",
                    "name",
                    "email",
                    "phone",
                    "email_bidx",
                    "company_name",
                    "tier",
                    "tags",
                    "assigned_to",
                    "created_at",
                    "updated_at",
                    "stage",
                    "stage_entered_at",
                    "lifecycle_updated_at",
                    "lifecycle_updated_by",
                    "reason_code",
                    "source",
                    "version",
                ],
            )
            await _copy(
                conn,
                "lifecycle_history",
                records=hist_rows,
                columns=[
                    "id",
                    "tenant_id",
                    "customer_id",
                    "version",
                    "from_stage",
                    "to_stage",
                    "changed_at",
                    "changed_by",
                    "reason_code",
                    "source",
                    "config_version",
                ],
            )
            await _copy(
                conn,
                "customer_metrics",
                records=metric_rows,
                columns=[
                    "tenant_id",
                    "customer_id",
                    "open_support_issues",
                    "closed_support_issues",
                    "last_support_issue_closed_at",
                    "contract_renewal_count",
                    "last_contract_renewed_at",
                ],
            )
            # Counts move in the same transaction as the rows they count.
            for stage in sorted(counts):
                await conn.execute(_COUNT, {"t": tenant, "s": stage, "n": counts[stage]})
        done += n
        if progress:
            progress(n)
    async with engine.begin() as conn:
        await conn.execute(text("ANALYZE customers"))
    return done


async def _copy(
    conn: AsyncConnection, table: str, *, records: list[tuple[Any, ...]], columns: list[str]
) -> None:
    """COPY speed under row-level security, which refuses COPY FROM into its tables: COPY into
    a transaction's staging table, then one INSERT that the policy checks row by row."""
    raw = (await conn.get_raw_connection()).driver_connection
    assert raw is not None
    cols = ", ".join(columns)
    stage = f"seed_{table}"
    await raw.execute(
        f"CREATE TEMP TABLE {stage} ON COMMIT DROP AS SELECT {cols} FROM {table} WITH NO DATA"  # noqa: S608
    )
    await raw.copy_records_to_table(stage, records=records, columns=columns)
    await raw.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage}")  # noqa: S608


async def tenant_has_customers(engine: AsyncEngine, tenant: str) -> bool:
    async with engine.begin() as conn:
        await tenant_scope(conn, tenant)
        row = (
            await conn.execute(
                text("SELECT 1 FROM customers WHERE tenant_id = :t LIMIT 1"), {"t": tenant}
            )
        ).first()
    return row is not None
