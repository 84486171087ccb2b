"""Migrations carry existing data forward: history written before the chain gets chained."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from customer360.data.audit import verify
from customer360.data.migrate import upgrade
from tests.conftest import scratch_database


@pytest.fixture
async def blank_url(pg_server_url: str) -> AsyncIterator[str]:
    async with scratch_database(pg_server_url, "c360_mig", migrate=False) as url:
        yield url


async def test_history_from_before_the_chain_is_chained_and_verifies(blank_url: str) -> None:
    # given a database at revision 0002 holding history of two tenants
    await asyncio.to_thread(upgrade, blank_url, "0002")
    engine: AsyncEngine = create_async_engine(blank_url)
    try:
        async with engine.begin() as c:
            for tenant, n in (("old-a", 3), ("old-b", 2)):
                cid = uuid.uuid4()
                for v in range(1, n + 1):
                    await c.execute(
                        text(
                            "INSERT INTO lifecycle_history (id, tenant_id, customer_id, version, "
                            "from_stage, to_stage, changed_at, changed_by, source, config_version)"
                            " VALUES (:id, :t, :c, :v, :f, :s, now(), 'u', 'UI', 1)"
                        ),
                        {
                            "id": uuid.uuid4(),
                            "t": tenant,
                            "c": cid,
                            "v": v,
                            "f": None if v == 1 else f"S{v - 1}",
                            "s": f"S{v}",
                        },
                    )
        # when it is brought to head
        await asyncio.to_thread(upgrade, blank_url)
        # then every old row has its place in its tenant's chain, and new rows continue it
        verdict = await verify(engine)
        assert verdict.broken == [] and verdict.rows == 5
        async with engine.begin() as c:
            await c.execute(
                text(
                    "INSERT INTO lifecycle_history (id, tenant_id, customer_id, version, "
                    "from_stage, to_stage, changed_at, changed_by, source, config_version) "
                    "VALUES (:id, 'old-a', :c, 1, NULL, 'S1', now(), 'u', 'UI', 1)"
                ),
                {"id": uuid.uuid4(), "c": uuid.uuid4()},
            )
        # (linked when its transaction commits)
        async with engine.connect() as c:
            heads = dict(
                (await c.execute(text("SELECT tenant_id, position FROM history_heads"))).all()
            )
        assert heads == {"old-a": 4, "old-b": 2}
        assert (await verify(engine)).broken == []
    finally:
        await engine.dispose()


async def test_the_models_alembic_reads_match_what_the_migrations_build(database_url: str) -> None:
    # given the session's database, migrated to head
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from customer360.data.models import metadata

    def differences(conn: Any) -> list[Any]:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    # when Alembic compares data/models.py with it, as autogenerate would
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(differences)
    finally:
        await engine.dispose()
    # then it finds nothing to generate
    assert diff == []


async def test_changes_queued_before_0017_are_sealed_by_the_upgrade(blank_url: str) -> None:
    # given a database at 0016 holding a change its writer left to the sealer, unsealed
    await asyncio.to_thread(upgrade, blank_url, "0016")
    engine: AsyncEngine = create_async_engine(blank_url)
    try:
        async with engine.begin() as c:
            await c.execute(text("SELECT set_config('c360.seal', 'deferred', true)"))
            history = uuid.uuid4()
            (seq,) = (
                await c.execute(
                    text(
                        "INSERT INTO lifecycle_history (id, tenant_id, customer_id, version, "
                        "from_stage, to_stage, changed_at, changed_by, source, config_version) "
                        "VALUES (:h, 'old', gen_random_uuid(), 1, NULL, 'S1', now(), 'u', "
                        "'UI', 1) RETURNING seq"
                    ),
                    {"h": history},
                )
            ).one()
            await c.execute(
                text(
                    "INSERT INTO history_unsealed (history_id, tenant_id, seq, from_stage, "
                    "to_stage) VALUES (:h, 'old', :s, NULL, 'S1')"
                ),
                {"h": history, "s": seq},
            )
        # when it is brought to head
        await asyncio.to_thread(upgrade, blank_url)
        # then the change is linked, counted and off the queue, and the chain verifies
        async with engine.connect() as c:
            linked = (
                await c.execute(
                    text("SELECT chain_pos FROM lifecycle_history WHERE id = :h"), {"h": history}
                )
            ).scalar_one()
            counts = dict((await c.execute(text("SELECT stage, count FROM stage_counts"))).all())
            queued = (await c.execute(text("SELECT count(*) FROM history_unsealed"))).scalar()
        assert (linked, counts, queued) == (1, {"S1": 1}, 0)
        verdict = await verify(engine)
        assert verdict.broken == [] and verdict.rows == 1
    finally:
        await engine.dispose()
