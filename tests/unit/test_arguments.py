"""The compiled path's argument conversion (gql/arguments.py) builds what strawberry builds."""

from __future__ import annotations

from typing import Any

import pytest
from strawberry.types.arguments import convert_arguments
from strawberry.types.field import StrawberryField

from customer360.gql.arguments import converter
from customer360.gql.schema import build_schema

SCHEMA = build_schema()
REGISTRY = SCHEMA.schema_converter.scalar_registry


def _field(type_name: str, name: str) -> StrawberryField:
    gql = SCHEMA._schema.get_type(type_name)
    assert gql is not None
    field = gql.fields[name].extensions["strawberry-definition"]  # type: ignore[attr-defined]
    assert isinstance(field, StrawberryField)
    return field


def _both(field: StrawberryField, raw: dict[str, Any]) -> tuple[Any, Any]:
    ours = converter(field.arguments, REGISTRY, SCHEMA.config)(raw)
    theirs = convert_arguments(raw, field.arguments, scalar_registry=REGISTRY, config=SCHEMA.config)
    return ours, theirs


ITEMS = [
    {"customerId": "c1", "stage": "Active"},
    {"customerId": "c2", "stage": "Churned", "reasonCode": "PRICE", "expectedVersion": 3},
    {"customerId": "c3", "stage": "Active", "reasonCode": None, "idempotencyKey": "k-1"},
    {
        "customerId": "c4",
        "stage": "Active",
        "reasonCode": "X",
        "expectedVersion": None,
        "idempotencyKey": None,
    },
]


@pytest.mark.parametrize("item", ITEMS)
def test_a_stage_change_input_is_built_as_strawberry_builds_it(item: dict[str, Any]) -> None:
    ours, theirs = _both(_field("Mutation", "updateLifecycleStage"), {"input": item})
    assert ours == theirs and type(ours["input"]) is type(theirs["input"])
    assert vars(ours["input"]) == vars(theirs["input"])


def test_a_bulk_list_is_built_item_by_item_as_strawberry_builds_it() -> None:
    ours, theirs = _both(_field("Mutation", "updateLifecycleStages"), {"inputs": ITEMS})
    assert ours == theirs
    assert [vars(x) for x in ours["inputs"]] == [vars(x) for x in theirs["inputs"]]


def test_every_field_of_the_schema_gets_a_converter_that_agrees_when_given_nothing() -> None:
    for type_ in SCHEMA._schema.type_map.values():
        for field in (getattr(type_, "fields", None) or {}).values():
            definition = getattr(field, "extensions", {}).get("strawberry-definition")
            if isinstance(definition, StrawberryField) and definition.arguments:
                ours, theirs = _both(definition, {})
                assert ours == theirs == {}


def test_other_inputs_are_strawberrys_to_convert() -> None:
    raw = {"input": {"stages": ["A", "B"], "transitions": [{"from": "A", "to": ["B"]}]}}
    ours, theirs = _both(_field("Mutation", "configureLifecycleStages"), raw)
    assert ours == theirs
