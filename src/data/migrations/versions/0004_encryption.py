"""Encryption at rest: per-tenant wrapped data keys, email blind index, erasure mark.

Email and phone stay text columns but now hold AES-256-GCM tokens (`v1.` + base64url), so
plaintext rows written before this revision are sealed by `c360 migrate` with the keyring
of C360_DATA_KEY (a migration alone has no keys).

Revision ID: 0004
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tenant_keys",
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("kek_id", sa.Text(), nullable=False),
        # NULL once destroyed: the tenant's encrypted values can never be opened again.
        sa.Column("wrapped", sa.LargeBinary()),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.Column("rotated_at", TS),
        sa.Column("destroyed_at", TS),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_tenant_keys")),
    )
    op.add_column("customers", sa.Column("email_bidx", sa.LargeBinary()))
    op.add_column("customers", sa.Column("erased_at", TS))
    op.drop_index("ix_customers_email", table_name="customers")
    op.create_index(
        "ix_customers_email_bidx",
        "customers",
        ["tenant_id", "email_bidx"],
        postgresql_where=sa.text("deleted_at IS NULL"),
    )


def downgrade() -> None:
    # Dropping wrapped data keys would make every sealed value unreadable, for good.
    keys = op.get_bind().execute(sa.text("SELECT count(*) FROM tenant_keys")).scalar()
    if keys:
        raise RuntimeError(
            f"refusing to downgrade below 0004: {keys} tenant data keys would be destroyed "
            "and their encrypted values lost"
        )
    op.drop_index("ix_customers_email_bidx", table_name="customers")
    op.create_index(
        "ix_customers_email",
        "customers",
        ["tenant_id", sa.text("lower(email)")],
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.drop_column("customers", "erased_at")
    op.drop_column("customers", "email_bidx")
    op.drop_table("tenant_keys")
