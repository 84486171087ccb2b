"""The list orders that a stage change moves, in a narrow table beside the customers.

A stage change writes `stage`, `stage_entered_at` and `updated_at`, and three list indexes
covered them: no update of a customer was HOT, so each change put a new entry into all nine
B-tree indexes of the table and its GIN index (docs/BENCHMARKS.md, session 15: 31 index
entries per change, the customer's 10 the largest share). Those three indexes now live on
`customer_list_keys`, one narrow row per customer with the columns they order and filter
by. The customer row keeps every value, loses no column, and with room left on its pages
(fillfactor 90) a stage change updates it HOT: its other indexes take no new entry.

The keys are kept by statement triggers on `customers`, so no writer (the API, the seed's
copy, erasure, an older gateway in a rolling update) can forget them. Their function runs
as the owner; the application's role may only read the table. Lists ordered by `updatedAt`
or `stageEnteredAt`, or by one stage newest first, read their page of keys, then each
customer (data/queries.py); counts by stage read the keys alone. Reads of one customer and
every other list read `customers` as before.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
# The columns the keys copy. The triggers run inside the writing statement, so each value is
# the same in the customer row and its keys in every snapshot: a list may take it from either.
KEYS = ("tenant_id", "id", "stage", "stage_entered_at", "updated_at", "created_at", "deleted_at")
# 0005's rule, each setting read once per statement (an InitPlan). PostgreSQL estimates the
# plain form by the setting's value when it plans, which is empty for the API's
# one-statement reads (data/queries.py sets the tenant inside the statement): it took the
# tenant's keys for one row and sorted the whole tenant rather than read fifty entries of an
# index (docs/BENCHMARKS.md, session 14). The same rule, so the same rows.
RULE = (
    "tenant_id = (SELECT current_setting('app.tenant_id', true)) "
    "OR (SELECT current_setting('app.scope', true)) = 'system'"
)
# old name, new name, columns: the indexes as they were on `customers` (0001).
MOVED = (
    (
        "ix_customers_updated",
        "ix_customer_list_keys_updated",
        "tenant_id, updated_at DESC, id DESC",
    ),
    (
        "ix_customers_entered",
        "ix_customer_list_keys_entered",
        "tenant_id, stage_entered_at DESC, id DESC",
    ),
    (
        "ix_customers_stage",
        "ix_customer_list_keys_stage",
        "tenant_id, stage, created_at DESC, id DESC",
    ),
)

_COLS = ", ".join(KEYS)
_MOVING = KEYS[2:]  # what a write may change: a customer's tenant and id never do


def _of(alias: str, columns: tuple[str, ...] = _MOVING) -> str:
    return ", ".join(f"{alias}.{c}" for c in columns)


# One statement each (the driver prepares what it sends): a function per event, run as
# the owner, and its statement trigger with the rows the statement wrote.
_BODIES = {
    "insert": f"INSERT INTO customer_list_keys ({_COLS}) SELECT {_of('n', KEYS)} FROM new_rows n",  # noqa: S608
    "update": (
        f"UPDATE customer_list_keys k SET ({', '.join(_MOVING)}) = ({_of('n')}) "  # noqa: S608
        "FROM new_rows n WHERE k.tenant_id = n.tenant_id AND k.id = n.id "
        f"AND ({_of('k')}) IS DISTINCT FROM ({_of('n')})"
    ),
    "delete": (
        "DELETE FROM customer_list_keys k USING old_rows o "
        "WHERE k.tenant_id = o.tenant_id AND k.id = o.id"
    ),
}
SYNC = tuple(
    statement
    for event, body in _BODIES.items()
    for statement in (
        f"CREATE FUNCTION c360_list_keys_{event}() RETURNS trigger LANGUAGE plpgsql "
        f"SECURITY DEFINER SET search_path = public, pg_temp AS $$ BEGIN {body}; RETURN NULL; "
        "END $$",
        f"CREATE TRIGGER customers_list_keys_{event} AFTER {event.upper()} ON customers "
        f"REFERENCING {'OLD' if event == 'delete' else 'NEW'} TABLE AS "
        f"{'old_rows' if event == 'delete' else 'new_rows'} "
        f"FOR EACH STATEMENT EXECUTE FUNCTION c360_list_keys_{event}()",
    )
)


def upgrade() -> None:
    op.create_table(
        "customer_list_keys",
        sa.Column("tenant_id", sa.Text(), nullable=False),
        sa.Column("id", UUID(as_uuid=True), nullable=False),
        sa.Column("stage", sa.Text(), nullable=False),
        sa.Column("stage_entered_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("deleted_at", TS),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_customer_list_keys"),
    )
    # Every tenant's rows: the migration reads and writes across tenants.
    op.execute("SELECT set_config('app.scope', 'system', true)")
    op.execute(f"INSERT INTO customer_list_keys ({_COLS}) SELECT {_COLS} FROM customers")  # noqa: S608
    for old, new, columns in MOVED:
        op.execute(f"CREATE INDEX {new} ON customer_list_keys ({columns}) WHERE deleted_at IS NULL")
        op.execute(f"DROP INDEX {old}")
    op.execute("ALTER TABLE customer_list_keys ENABLE ROW LEVEL SECURITY")
    op.execute("ALTER TABLE customer_list_keys FORCE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY tenant_isolation ON customer_list_keys USING ({RULE}) WITH CHECK ({RULE})"
    )
    for statement in SYNC:
        op.execute(statement)
    # Room on each page for a row's next version: what makes the update HOT. Pages written
    # before keep none until their rows move once.
    op.execute("ALTER TABLE customers SET (fillfactor = 90)")


def downgrade() -> None:
    op.execute("ALTER TABLE customers RESET (fillfactor)")
    for trigger in ("insert", "update", "delete"):
        op.execute(f"DROP TRIGGER customers_list_keys_{trigger} ON customers")
        op.execute(f"DROP FUNCTION c360_list_keys_{trigger}()")
    for old, _new, columns in MOVED:
        op.execute(f"CREATE INDEX {old} ON customers ({columns}) WHERE deleted_at IS NULL")
    op.drop_table("customer_list_keys")
