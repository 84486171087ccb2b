"""The seal's work per row, cut: the digest inlined, the replay sequence looked up once.

`c360_history_digest` was declared IMMUTABLE, but its body calls STABLE functions
(`jsonb_build_array`, the cast of jsonb to text). PostgreSQL inlines a SQL function only when
its body is no more volatile than the function says, so every call ran as a query of its own:
8.6 us per sealed row under bulk writes (pg_stat_statements, docs/BENCHMARKS.md). Declared
STABLE it is inlined into the expression that calls it. The body, and so every digest, is the
same; no index or constraint uses it.

The seal looked up the history's sequence by name for every row
(`nextval(pg_get_serial_sequence(...))`, about 2 us); it is looked up once per batch now.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

from importlib import import_module

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels = None
depends_on = None

_PER_ROW = "    h.seq := nextval(pg_get_serial_sequence('lifecycle_history', 'seq'));\n"
_ONCE = "    h.seq := nextval(seq_of_history);\n"
_DECLARED = "  oldest timestamptz;\n"


def _seal(once: bool) -> str:
    """0014's seal (itself 0011's), with the sequence looked up once or per row."""
    seal: str = import_module(
        "customer360.data.migrations.versions.0014_seal_fans_out_webhooks"
    )._seal(fan_out=True)
    if not once:
        return seal
    assert seal.count(_PER_ROW) == 1 and seal.count(_DECLARED) == 1, "not 0014's seal"
    seal = seal.replace(_PER_ROW, _ONCE)
    return seal.replace(
        _DECLARED,
        _DECLARED
        + "  seq_of_history regclass := "
        + "pg_get_serial_sequence('lifecycle_history', 'seq')::regclass;\n",
        1,
    )


def upgrade() -> None:
    op.execute("ALTER FUNCTION c360_history_digest(bytea, lifecycle_history) STABLE")
    op.execute(_seal(once=True))


def downgrade() -> None:
    op.execute(_seal(once=False))
    op.execute("ALTER FUNCTION c360_history_digest(bytea, lifecycle_history) IMMUTABLE")
