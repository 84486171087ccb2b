"""Compiled operations: a field's argument conversion, worked out once.

strawberry's `convert_arguments` works out again, for every value of every request, each
input field's GraphQL name and resolved type: a 100-change `updateLifecycleStages` call
spent 12% of the worker there. An input type whose fields are all scalars (or optional
ones) gets a converter made once here. It builds the same object strawberry builds: every
field without a default set to None, then the fields given, as given (a scalar's value is
already coerced by graphql-core). Any other type is converted by strawberry itself.
tests/unit/test_arguments.py proves the two agree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING
from typing import Any

from strawberry.relay.types import GlobalID
from strawberry.scalars import is_scalar
from strawberry.schema.config import StrawberryConfig
from strawberry.types.arguments import StrawberryArgument, convert_argument
from strawberry.types.base import (
    StrawberryList,
    StrawberryMaybe,
    StrawberryOptional,
    has_object_definition,
)
from strawberry.types.unset import UNSET

Convert = Callable[[Any], Any]
Registry = Mapping[object, Any]


def converter(
    arguments: Sequence[StrawberryArgument], registry: Registry, config: StrawberryConfig
) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The coerced arguments of a field (by GraphQL name) as its resolver's keywords."""
    parts = []
    for argument in arguments:
        assert argument.python_name
        name = config.name_converter.from_argument(argument)
        made = _compiled(argument.type, registry, config)
        if made is None:
            made = _strawberrys(argument.type, registry, config, name)
        parts.append((name, argument.python_name, made))

    def convert(raw: dict[str, Any]) -> dict[str, Any]:
        return {python: made(raw[name]) for name, python, made in parts if name in raw}

    return convert


def _strawberrys(type_: Any, registry: Registry, config: StrawberryConfig, name: str) -> Convert:
    def convert(value: Any) -> Any:
        return convert_argument(value, type_, registry, config, None, path=(name,))

    return convert


def _absent(value: Any) -> bool:
    return value is None or value is UNSET


def _leaf(type_: Any, registry: Registry) -> bool:
    """A value strawberry passes through as it is: a scalar, or an optional one."""
    if isinstance(type_, StrawberryMaybe):
        return False  # wrapped in Some()
    if isinstance(type_, StrawberryOptional):
        type_ = type_.of_type
    return type_ is not GlobalID and is_scalar(type_, registry)


def _compiled(type_: Any, registry: Registry, config: StrawberryConfig) -> Convert | None:
    """A converter for a list of flat inputs, a flat input, or an optional one; None for
    anything else."""
    if isinstance(type_, StrawberryMaybe):
        return None
    if isinstance(type_, StrawberryOptional):
        inner = _compiled(type_.of_type, registry, config)
        if inner is None:
            return None
        return lambda v: v if _absent(v) else inner(v)
    if isinstance(type_, StrawberryList):
        item = _compiled(type_.of_type, registry, config)
        if item is None:
            return None
        return lambda v: v if _absent(v) else [item(x) for x in v]
    return _flat_input(type_, registry, config)


def _flat_input(type_: Any, registry: Registry, config: StrawberryConfig) -> Convert | None:
    if not has_object_definition(type_):
        return None
    definition = type_.__strawberry_definition__
    if not definition.is_input or definition.from_input is not None:
        return None
    fields = []
    for field in definition.fields:
        if not _leaf(field.resolve_type(type_definition=definition), registry):
            return None
        fields.append((config.name_converter.from_field(field), field.python_name))
    nones = {
        f.python_name: None
        for f in definition.fields
        if f.default_value is MISSING and f.default_factory is MISSING
    }

    def build(value: Any) -> Any:
        if _absent(value):
            return value
        kwargs = dict(nones)
        for name, python in fields:
            if name in value:
                kwargs[python] = value[name]
        return type_(**kwargs)

    return build
