"""Which columns of a customer's row a selection reads, so that a page reads only those.

Each field that answers from a customer's row says which columns its resolver reads
(`reads`, beside the resolver); a field whose value is built on the same row (a customer's
`lifecycle`, a page's `edges` and `node`) says so, and its type's fields say the rest. The
compiled path works the columns out once per document (`row_columns`) and hands them to the
resolver of a field marked `ROWS` (`customers`) through its info; strawberry's info has no
such attribute, and strawberry reads whole rows.

Why: a page of fifty customers spent a fifth of its CPU decoding columns nobody asked for,
four timestamps of 18 columns above all (docs/BENCHMARKS.md). A declaration that falls short
is never a wrong answer: the row raises `ColumnNotRead`, and strawberry answers the request;
the test suite fails on it (fastpath.SHORT_READS).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import strawberry

from .plan import Selection

COLUMNS = "c360.columns"
SAME_ROW = "c360.same_row"
ROWS = "c360.rows"


def reads(*columns: str, same_row: bool = False, **options: Any) -> Any:
    """`strawberry.field`, declaring the columns of the customer's row its resolver reads.
    `same_row`: its value is built on the same row, and its type's fields say what they read.
    """
    metadata = {COLUMNS: frozenset(columns), SAME_ROW: same_row}
    return strawberry.field(metadata=metadata, **options)


def rows_below(**options: Any) -> Any:
    """`strawberry.field` for a field that reads customers' rows for its selection: on the
    compiled path its info carries `row_columns`."""
    return strawberry.field(metadata={ROWS: True}, **options)


def metadata(selection: Selection) -> dict[str, Any]:
    definition = selection.definition
    field = definition.extensions.get("strawberry-definition") if definition else None
    return getattr(field, "metadata", None) or {}


def row_columns(tree: Sequence[Selection]) -> frozenset[str] | None:
    """The columns the fields of `tree` read of their row; None when one of them does not
    say (then the row is read whole)."""
    out: set[str] = set()
    for selection in tree:
        if selection.definition is None:  # __typename
            continue
        meta = metadata(selection)
        if COLUMNS not in meta:
            return None
        out |= meta[COLUMNS]
        if meta[SAME_ROW]:
            inner = row_columns(selection.children)
            if inner is None:
                return None
            out |= inner
    return frozenset(out)
