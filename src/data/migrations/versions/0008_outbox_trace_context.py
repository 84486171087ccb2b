"""The outbox keeps the W3C trace context of the change that wrote it (`traceparent` and
`tracestate`, NULL when tracing is off), so the relay publishes the audit event into the same
trace as the request or event that caused it, however much later that is.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable with no default: a catalogue change only, no table rewrite.
    op.add_column("outbox", sa.Column("traceparent", sa.Text()))
    op.add_column("outbox", sa.Column("tracestate", sa.Text()))


def downgrade() -> None:
    op.drop_column("outbox", "tracestate")
    op.drop_column("outbox", "traceparent")
