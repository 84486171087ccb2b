"""Row-level security on every tenant table, as defence in depth behind `WHERE tenant_id`.

A row is visible (and writable) only when its tenant is the transaction's `app.tenant_id`,
which the data layer sets with `set_config(..., true)`: transaction-local, so it cannot
follow a pooled connection into the next request. Work that spans tenants by design (the
outbox relay, `c360 audit verify`, `keys rotate`) declares `app.scope = 'system'` for its
transaction instead. FORCE applies the policies to the tables' owner as well; superusers
and BYPASSRLS roles are never subject to them, so the application must not run as one.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = (
    "customers",
    "lifecycle_history",
    "history_heads",
    "stage_configs",
    "stage_counts",
    "customer_metrics",
    "support_issues",
    "contract_renewals",
    "processed_events",
    "idempotency_keys",
    "outbox",
    "tenant_keys",
)
RULE = (
    "tenant_id = current_setting('app.tenant_id', true) "
    "OR current_setting('app.scope', true) = 'system'"
)


def upgrade() -> None:
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY tenant_isolation ON {table} USING ({RULE}) WITH CHECK ({RULE})")


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP POLICY tenant_isolation ON {table}")
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
