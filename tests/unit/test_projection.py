"""What each field of a customer's row says it reads (gql/projection.py) is what it reads:
a page reads only the declared columns, so a short declaration would send every such
request to strawberry."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from strawberry.types.base import get_object_definition

from customer360.data.queries import CUSTOMER_FIELDS, ColumnNotRead, shaped
from customer360.gql.customers import CustomerConnection, CustomerEdge
from customer360.gql.projection import COLUMNS, SAME_ROW
from customer360.gql.types import Customer, LifecycleStatus

ROW: dict[str, Any] = {
    "id": uuid.uuid4(),
    "tenant_id": "t",
    "name": "Ada",
    "email": None,
    "phone": None,
    "company_name": "Acme",
    "tier": "PRO",
    "tags": ["vip"],
    "assigned_to": "u1",
    "created_at": datetime(2026, 1, 1, tzinfo=UTC),
    "updated_at": datetime(2026, 1, 2, tzinfo=UTC),
    "stage": "Active",
    "stage_entered_at": datetime(2026, 1, 3, tzinfo=UTC),
    "lifecycle_updated_at": datetime(2026, 1, 3, tzinfo=UTC),
    "lifecycle_updated_by": "u2",
    "reason_code": None,
    "source": "UI",
    "version": 3,
}


def fields(cls: type) -> list[Any]:
    """The fields the schema serves (not the private ones)."""
    return [f for f in get_object_definition(cls, strict=True).fields if not f.name.startswith("_")]


def row_of(columns: frozenset[str]) -> Any:
    shape = shaped(columns)
    return shape(SimpleNamespace(**{c: ROW[c] for c in shape.columns}), None)  # as cached


@pytest.mark.parametrize("cls", [Customer, LifecycleStatus, CustomerEdge, CustomerConnection])
def test_every_field_of_a_row_type_declares_what_it_reads(cls: type) -> None:
    undeclared = [f.name for f in fields(cls) if COLUMNS not in (f.metadata or {})]
    assert undeclared == []


def sync_resolvers(cls: type) -> list[tuple[str, Any]]:
    return [
        (f.name, f)
        for f in fields(cls)
        if f.base_resolver is not None and not f.base_resolver.is_async
    ]


@pytest.mark.parametrize(
    ("name", "field"), sync_resolvers(Customer), ids=[n for n, _ in sync_resolvers(Customer)]
)
def test_a_customer_field_answers_from_its_declared_columns_alone(name: str, field: Any) -> None:
    # given a row holding only the columns the field declares (and the id)
    row = row_of(field.metadata[COLUMNS])
    # when its resolver runs, then it reads no other
    args = {"info": _Info()} if field.base_resolver.info_parameter else {}
    field.base_resolver.wrapped_func(Customer(_row=row), **args)


@pytest.mark.parametrize(
    ("name", "field"),
    sync_resolvers(LifecycleStatus),
    ids=[n for n, _ in sync_resolvers(LifecycleStatus)],
)
def test_a_lifecycle_field_answers_from_its_declared_columns_alone(name: str, field: Any) -> None:
    row = row_of(field.metadata[COLUMNS])
    field.base_resolver.wrapped_func(LifecycleStatus(_row=row, _config=_no_config))


def test_a_column_left_out_is_refused_not_guessed() -> None:
    row = row_of(frozenset({"name"}))
    assert row.name == "Ada" and row.id == ROW["id"]
    with pytest.raises(ColumnNotRead):
        _ = row.stage


def test_lifecycle_is_read_through_its_own_fields() -> None:
    lifecycle = next(f for f in fields(Customer) if f.name == "lifecycle")
    assert lifecycle.metadata[SAME_ROW] and lifecycle.metadata[COLUMNS] == frozenset()
    assert set(CUSTOMER_FIELDS) >= {c for f in fields(Customer) for c in f.metadata[COLUMNS]}


class _Info:
    class context:  # stands for Info.context
        @staticmethod
        async def stage_config() -> None:
            return None


async def _no_config() -> None:
    return None
