"""Data subject access (GDPR articles 15 and 20): every export of a customer's data is
recorded (who, when, which customer, through what), and a stage change caused by a consumed
event keeps that event's id, so an export can say which event moved the customer.

Both tables lead with tenant_id and get migration 0005's row-level security policy. The
causes live beside the history, not in it: the history rows and their hash chain stay as
they are.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
TABLES = ("data_exports", "history_causes")
RULE = (
    "tenant_id = current_setting('app.tenant_id', true) "
    "OR current_setting('app.scope', true) = 'system'"
)


def upgrade() -> None:
    op.create_table(
        "data_exports",
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("customer_id", UUID(as_uuid=True), nullable=False),
        sa.Column("exported_by", sa.Text(), nullable=False),
        sa.Column("exported_at", TS, nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("customer_erased", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_data_exports"),
    )
    op.create_index(
        "ix_data_exports_tenant_at",
        "data_exports",
        ["tenant_id", sa.text("exported_at DESC"), sa.text("id DESC")],
    )
    op.create_table(
        "history_causes",
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("history_id", UUID(as_uuid=True), nullable=False),
        sa.Column("event_source", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "history_id", name="pk_history_causes"),
    )
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY tenant_isolation ON {table} USING ({RULE}) WITH CHECK ({RULE})")


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP POLICY tenant_isolation ON {table}")
    op.drop_table("history_causes")
    op.drop_index("ix_data_exports_tenant_at", table_name="data_exports")
    op.drop_table("data_exports")
