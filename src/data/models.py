"""The relational model. Every tenant table leads with tenant_id: scoping and indexes alike."""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, UUID

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
    }
)

TS = DateTime(timezone=True)
live = text("deleted_at IS NULL")

customers = Table(
    "customers",
    metadata,
    Column("tenant_id", Text, nullable=False),
    Column("id", UUID(as_uuid=True), nullable=False),
    Column("name", Text, nullable=False),
    # AES-256-GCM tokens (data/crypto.py), never plaintext; email is found by its blind index.
    Column("email", Text),
    Column("phone", Text),
    Column("email_bidx", LargeBinary),
    Column("erased_at", TS),
    Column("company_name", Text),
    Column("tier", String(16)),
    Column("tags", ARRAY(Text), nullable=False, server_default="{}"),
    Column("assigned_to", Text),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("deleted_at", TS),
    # The current lifecycle status lives on the customer row: one row to lock, filter and sort.
    Column("stage", Text, nullable=False),
    Column("stage_entered_at", TS, nullable=False),
    Column("lifecycle_updated_at", TS, nullable=False),
    Column("lifecycle_updated_by", Text, nullable=False),
    Column("reason_code", Text),
    Column("source", String(16), nullable=False),
    Column("version", Integer, nullable=False),
    PrimaryKeyConstraint("tenant_id", "id"),
    Index(
        "ix_customers_created",
        "tenant_id",
        text("created_at DESC"),
        text("id DESC"),
        postgresql_where=live,
    ),
    Index("ix_customers_name", "tenant_id", "name", "id", postgresql_where=live),
    Index("ix_customers_tier", "tenant_id", "tier", postgresql_where=live),
    Index("ix_customers_assignee", "tenant_id", "assigned_to", postgresql_where=live),
    Index("ix_customers_email_bidx", "tenant_id", "email_bidx", postgresql_where=live),
    Index("ix_customers_tags", "tags", postgresql_using="gin"),
    # No index covers a column a stage change writes: with room on its page (fillfactor 90,
    # migration 0016) the change updates the row HOT; the lists these columns order read
    # customer_list_keys (data/queries.py).
    postgresql_with={"fillfactor": 90},
)

# The columns of `customers` that a stage change moves and that lists order or filter by,
# copied by triggers on `customers` (migration 0016); read-only to the application.
customer_list_keys = Table(
    "customer_list_keys",
    metadata,
    Column("tenant_id", Text, nullable=False),
    Column("id", UUID(as_uuid=True), nullable=False),
    Column("stage", Text, nullable=False),
    Column("stage_entered_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("deleted_at", TS),
    PrimaryKeyConstraint("tenant_id", "id"),
    Index(
        "ix_customer_list_keys_updated",
        "tenant_id",
        text("updated_at DESC"),
        text("id DESC"),
        postgresql_where=live,
    ),
    Index(
        "ix_customer_list_keys_entered",
        "tenant_id",
        text("stage_entered_at DESC"),
        text("id DESC"),
        postgresql_where=live,
    ),
    Index(
        "ix_customer_list_keys_stage",
        "tenant_id",
        "stage",
        text("created_at DESC"),
        text("id DESC"),
        postgresql_where=live,
    ),
)

lifecycle_history = Table(
    "lifecycle_history",
    metadata,
    Column("id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", Text, nullable=False),
    Column("customer_id", UUID(as_uuid=True), nullable=False),
    # The customer's version after this change: orders one customer's history, gap-free.
    Column("version", Integer, nullable=False),
    Column("from_stage", Text),
    Column("to_stage", Text, nullable=False),
    Column("changed_at", TS, nullable=False),
    Column("changed_by", Text, nullable=False),
    Column("reason_code", Text),
    Column("source", String(16), nullable=False),
    Column("config_version", Integer, nullable=False),
    # A tenant-wide order for replaying history to reconnecting subscribers: drawn again
    # when the row is sealed into the chain (migration 0011), under the tenant's chain lock,
    # so a row reaches replay above every seq seen before it.
    Column("seq", BigInteger, Identity(), nullable=False),
    # Tamper evidence, linked by the sealer after commit (NULL until then): the tenant's
    # chain position and sha256(prev_hash || canonical row).
    Column("chain_pos", BigInteger),
    Column("prev_hash", LargeBinary),
    Column("row_hash", LargeBinary),
    UniqueConstraint("tenant_id", "customer_id", "version"),
    Index("uq_lifecycle_history_tenant_id_chain_pos", "tenant_id", "chain_pos", unique=True),
    Index("ix_lifecycle_history_tenant_seq", "tenant_id", "seq"),
)

# The committed changes awaiting their seal (migrations 0011, 0017): their insert order, to
# seal them in, their count deltas, which the summary adds until then, and the whole change
# (the history row's columns and its audit event), which the seal inserts linked. An older
# gateway's rows hold only the seq and the stages (its history row is linked at its commit).
history_unsealed = Table(
    "history_unsealed",
    metadata,
    Column("history_id", UUID(as_uuid=True), primary_key=True),
    Column("tenant_id", Text, nullable=False),
    Column(
        "seq",
        BigInteger,
        server_default=text(
            "nextval(pg_get_serial_sequence('lifecycle_history', 'seq')::regclass)"
        ),
        nullable=False,
    ),
    Column("from_stage", Text),
    Column("to_stage", Text, nullable=False),
    Column("customer_id", UUID(as_uuid=True)),
    Column("version", Integer),
    Column("changed_at", TS),
    Column("changed_by", Text),
    Column("reason_code", Text),
    Column("source", String(16)),
    Column("config_version", Integer),
    Column("outbox_id", BigInteger),
    Column("topic", Text),
    Column("key", Text),
    Column("event", JSONB),
    Column("traceparent", Text),
    Column("tracestate", Text),
    Column("created_at", TS, server_default=func.now()),
    Index("ix_history_unsealed_tenant_seq", "tenant_id", "seq"),
)

history_heads = Table(
    "history_heads",
    metadata,
    Column("tenant_id", Text, nullable=False),
    Column("position", BigInteger, nullable=False),
    Column("head", LargeBinary, nullable=False),
    Column("updated_at", TS, nullable=False),
    PrimaryKeyConstraint("tenant_id"),
)

tenant_keys = Table(
    "tenant_keys",
    metadata,
    Column("tenant_id", Text, nullable=False),
    Column("kek_id", Text, nullable=False),
    Column("wrapped", LargeBinary),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    Column("rotated_at", TS),
    Column("destroyed_at", TS),
    PrimaryKeyConstraint("tenant_id"),
)

stage_configs = Table(
    "stage_configs",
    metadata,
    Column("tenant_id", Text, nullable=False),
    Column("version", Integer, nullable=False),
    Column("config", JSONB, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("updated_by", Text, nullable=False),
    PrimaryKeyConstraint("tenant_id", "version"),
)

stage_counts = Table(
    "stage_counts",
    metadata,
    Column("tenant_id", Text, nullable=False),
    Column("stage", Text, nullable=False),
    Column("count", BigInteger, nullable=False),
    PrimaryKeyConstraint("tenant_id", "stage"),
)

customer_metrics = Table(
    "customer_metrics",
    metadata,
    Column("tenant_id", Text, nullable=False),
    Column("customer_id", UUID(as_uuid=True), nullable=False),
    Column("open_support_issues", Integer, nullable=False, server_default="0"),
    Column("closed_support_issues", Integer, nullable=False, server_default="0"),
    Column("last_support_issue_closed_at", TS),
    Column("contract_renewal_count", Integer, nullable=False, server_default="0"),
    Column("last_contract_renewed_at", TS),
    PrimaryKeyConstraint("tenant_id", "customer_id"),
)

support_issues = Table(
    "support_issues",
    metadata,
    Column("tenant_id", Text, nullable=False),
    Column("customer_id", UUID(as_uuid=True), nullable=False),
    Column("issue_id", Text, nullable=False),
    Column("priority", Text),
    Column("opened_at", TS),
    Column("closed_at", TS),
    PrimaryKeyConstraint("tenant_id", "customer_id", "issue_id"),
)

contract_renewals = Table(
    "contract_renewals",
    metadata,
    Column("tenant_id", Text, nullable=False),
    Column("customer_id", UUID(as_uuid=True), nullable=False),
    Column("contract_id", Text, nullable=False),
    Column("renewed_at", TS, nullable=False),
    PrimaryKeyConstraint("tenant_id", "customer_id", "contract_id", "renewed_at"),
)

processed_events = Table(
    "processed_events",
    metadata,
    Column("source", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("tenant_id", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("processed_at", TS, nullable=False, server_default=func.now()),
    # The relay leader's sweep forgets marks by age (migration 0007).
    Index("ix_processed_events_processed_at", "processed_at"),
    PrimaryKeyConstraint("source", "event_id"),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("tenant_id", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("fingerprint", Text, nullable=False),
    Column("result", JSONB, nullable=False),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "subject", "key"),
    Index("ix_idempotency_keys_created_at", "created_at"),
)

outbox = Table(
    "outbox",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("tenant_id", Text, nullable=False),
    Column("topic", Text, nullable=False),
    Column("key", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("created_at", TS, nullable=False, server_default=func.now()),
    Column("published_at", TS),
    Column("redis_published_at", TS),
    Column("history_seq", BigInteger),
    Column("history_id", UUID(as_uuid=True)),
    # W3C trace context of the write, for the audit event (migration 0008; NULL untraced).
    Column("traceparent", Text),
    Column("tracestate", Text),
    # Fanned out to webhook deliveries by the relay's webhook sink (migration 0010).
    Column("webhooks_fanned_at", TS),
    Index("ix_outbox_pending", "id", postgresql_where=text("published_at IS NULL")),
    Index("ix_outbox_redis_pending", "id", postgresql_where=text("redis_published_at IS NULL")),
    # The commit-time chain trigger finds a history row's outbox row by it (migration 0006).
    Index("ix_outbox_history_id", "history_id", postgresql_where=text("history_id IS NOT NULL")),
    Index("ix_outbox_webhooks_pending", "id", postgresql_where=text("webhooks_fanned_at IS NULL")),
)

# Data subject access (migration 0009): every export, and the event behind an event-driven
# stage change.
data_exports = Table(
    "data_exports",
    metadata,
    Column("tenant_id", Text, nullable=False),
    Column("id", UUID(as_uuid=True), nullable=False),
    Column("customer_id", UUID(as_uuid=True), nullable=False),
    Column("exported_by", Text, nullable=False),
    Column("exported_at", TS, nullable=False),
    Column("channel", String(16), nullable=False),
    Column("customer_erased", Boolean, nullable=False),
    PrimaryKeyConstraint("tenant_id", "id"),
    Index("ix_data_exports_tenant_at", "tenant_id", text("exported_at DESC"), text("id DESC")),
)

history_causes = Table(
    "history_causes",
    metadata,
    Column("tenant_id", Text, nullable=False),
    Column("history_id", UUID(as_uuid=True), nullable=False),
    Column("event_source", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    PrimaryKeyConstraint("tenant_id", "history_id"),
)

# Webhooks (migration 0010): a tenant's endpoints and the deliveries made from the outbox.
webhook_endpoints = Table(
    "webhook_endpoints",
    metadata,
    Column("tenant_id", Text, nullable=False),
    Column("id", UUID(as_uuid=True), nullable=False),
    Column("url", Text, nullable=False),
    Column("description", Text),
    Column("event_types", ARRAY(Text), nullable=False, server_default="{}"),
    Column("stages", ARRAY(Text), nullable=False, server_default="{}"),
    Column("active", Boolean, nullable=False),
    # whsec_ secrets sealed with the tenant's data key, never plaintext.
    Column("secret", Text, nullable=False),
    Column("previous_secret", Text),
    Column("previous_secret_until", TS),
    Column("created_at", TS, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("consecutive_failures", Integer, nullable=False, server_default="0"),
    Column("failing_since", TS),
    Column("disabled_at", TS),
    Column("disabled_reason", Text),
    PrimaryKeyConstraint("tenant_id", "id"),
)

webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("tenant_id", Text, nullable=False),
    Column("id", UUID(as_uuid=True), nullable=False),
    Column("endpoint_id", UUID(as_uuid=True), nullable=False),
    Column("outbox_id", BigInteger, nullable=False),
    Column("customer_id", Text, nullable=False),
    Column("event_id", Text, nullable=False),
    Column("event_type", Text, nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", TS, nullable=False),
    Column("last_attempt_at", TS),
    Column("last_status_code", Integer),
    Column("last_error", Text),
    Column("created_at", TS, nullable=False),
    Column("delivered_at", TS),
    PrimaryKeyConstraint("tenant_id", "id"),
    UniqueConstraint("tenant_id", "endpoint_id", "outbox_id"),
    Index(
        "ix_webhook_deliveries_queue",
        "endpoint_id",
        "customer_id",
        "outbox_id",
        postgresql_where=text("status = 'pending'"),
    ),
    Index("ix_webhook_deliveries_log", "tenant_id", "endpoint_id", text("outbox_id DESC")),
)
