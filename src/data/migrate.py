"""Schema migrations (Alembic), run by `c360 migrate`, `c360 dev` and the test fixtures."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import create_async_engine

HERE = Path(__file__).resolve().parent

# What a change's writer may give of its history row: not the chain's columns.
HISTORY_INSERTABLE = (
    "id, tenant_id, customer_id, version, from_stage, to_stage, changed_at, changed_by, "
    "reason_code, source, config_version"
)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema at `url` up to `revision`. Blocking: call from a thread in async code."""
    command.upgrade(alembic_config(url), revision)


def grant_application_role(owner_url: str, app_url: str) -> str | None:
    """Give the application's role (the user of C360_DATABASE_URL) what it needs on the
    owner's tables. Returns that role, or None when the application connects as the owner.
    Blocking, like `upgrade`."""
    owner, app = make_url(owner_url), make_url(app_url)
    if not app.username or app.username == owner.username:
        return None
    role = app.username.replace('"', '""')
    statements = (
        f'GRANT USAGE ON SCHEMA public TO "{role}"',
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO "{role}"',
        f'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "{role}"',
        # History is append-only for the application; the chain heads are written only by
        # the history trigger, which runs as the owner. The application writes no history
        # since migration 0017 (the seal does, as the owner); an older gateway or the seed
        # may insert a change, never its links or seq, which its commit draws.
        f'REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON lifecycle_history FROM "{role}"',
        f'GRANT INSERT ({HISTORY_INSERTABLE}) ON lifecycle_history TO "{role}"',
        f'REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON history_heads FROM "{role}"',
        # Kept by the customers' triggers (migration 0016), which run as the owner.
        f'REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON customer_list_keys FROM "{role}"',
    )

    async def run() -> None:
        engine = create_async_engine(owner)
        try:
            async with engine.begin() as conn:
                for sql in statements:
                    await conn.execute(text(sql))
        finally:
            await engine.dispose()

    asyncio.run(run())
    return app.username


async def upgrade_async(url: str) -> None:
    # Alembic's env.py runs its own event loop, so it gets a thread of its own.
    await asyncio.to_thread(upgrade, url)
