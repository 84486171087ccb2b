"""Outbox relay: one publish mark per sink, and the history position for subscribers.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # published_at stays the Kafka mark; Redis pub/sub gets its own, so one sink being
    # down never holds the other back.
    op.add_column("outbox", sa.Column("redis_published_at", sa.DateTime(timezone=True)))
    op.add_column("outbox", sa.Column("history_seq", sa.BigInteger()))
    op.create_index(
        "ix_outbox_redis_pending",
        "outbox",
        ["id"],
        postgresql_where=sa.text("redis_published_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_redis_pending", table_name="outbox")
    op.drop_column("outbox", "history_seq")
    op.drop_column("outbox", "redis_published_at")
