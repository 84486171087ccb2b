"""Webhooks: a tenant's endpoints, and one delivery row per (endpoint, audit event), made
from the outbox by the relay's webhook sink (its mark `webhooks_fanned_at`), never written
beside a change. Both tables lead with tenant_id and get migration 0005's policy.

Outbox rows written before this revision have nothing to fan out (no endpoint existed), so
they are marked at once.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
TABLES = ("webhook_endpoints", "webhook_deliveries")
RULE = (
    "tenant_id = current_setting('app.tenant_id', true) "
    "OR current_setting('app.scope', true) = 'system'"
)


def upgrade() -> None:
    op.create_table(
        "webhook_endpoints",
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("event_types", ARRAY(sa.Text()), nullable=False, server_default="{}"),
        sa.Column("stages", ARRAY(sa.Text()), nullable=False, server_default="{}"),
        sa.Column("active", sa.Boolean(), nullable=False),
        # whsec_ secrets sealed with the tenant's data key (data/crypto.py), never plaintext.
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("previous_secret", sa.Text()),
        sa.Column("previous_secret_until", TS),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("failing_since", TS),
        sa.Column("disabled_at", TS),
        sa.Column("disabled_reason", sa.Text()),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_webhook_endpoints"),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("endpoint_id", UUID(as_uuid=True), nullable=False),
        sa.Column("outbox_id", sa.BigInteger(), nullable=False),
        sa.Column("customer_id", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("payload", JSONB(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("last_attempt_at", TS),
        sa.Column("last_status_code", sa.Integer()),
        sa.Column("last_error", sa.Text()),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("delivered_at", TS),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_webhook_deliveries"),
        sa.UniqueConstraint(
            "tenant_id",
            "endpoint_id",
            "outbox_id",
            name="uq_webhook_deliveries_tenant_id_endpoint_id_outbox_id",
        ),
    )
    # The head of each (endpoint, customer) queue: the worker delivers those only.
    op.create_index(
        "ix_webhook_deliveries_queue",
        "webhook_deliveries",
        ["endpoint_id", "customer_id", "outbox_id"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_webhook_deliveries_log",
        "webhook_deliveries",
        ["tenant_id", "endpoint_id", sa.text("outbox_id DESC")],
    )
    op.add_column("outbox", sa.Column("webhooks_fanned_at", TS))
    op.execute("UPDATE outbox SET webhooks_fanned_at = now()")
    op.create_index(
        "ix_outbox_webhooks_pending",
        "outbox",
        ["id"],
        postgresql_where=sa.text("webhooks_fanned_at IS NULL"),
    )
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY tenant_isolation ON {table} USING ({RULE}) WITH CHECK ({RULE})")


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP POLICY tenant_isolation ON {table}")
    op.drop_index("ix_outbox_webhooks_pending", table_name="outbox")
    op.drop_column("outbox", "webhooks_fanned_at")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_endpoints")
