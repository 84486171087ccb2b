"""The generated completion of objects whose fields never wait (`compiled.build`), on a schema
of its own: the same data as strawberry, and strawberry's to answer when a value breaks the
schema's promise."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from enum import Enum
from functools import partial
from typing import Any

import orjson
import pytest
import strawberry
from graphql import validate
from hypothesis import given
from hypothesis import strategies as st

from customer360.gql.compiled import Compiler, Info, Run, Unsupported, execute
from customer360.gql.plan import Planner


@strawberry.enum
class Tier(Enum):
    FREE = "FREE"
    PRO = "PRO"


@strawberry.type
class Status:
    stage: str
    since: int
    at: datetime  # a scalar serialised inline
    tier: Tier | None  # an enum that may be null


@strawberry.type
class Row:
    name: str  # a plain attribute
    note: strawberry.Private[str | None]
    tier: Tier
    flag: bool

    @strawberry.field
    def label(self) -> str | None:  # a method of the row
        return self.note

    @strawberry.field
    def required_label(self) -> str:  # promises a value it may not have
        return self.note  # type: ignore[return-value]

    @strawberry.field
    def status(self, info: strawberry.Info) -> Status:  # takes the info, as lifecycle does
        at = datetime(2026, 1, 2, 3, 4, 5, 6 if self.note else 0, tzinfo=UTC)
        tier = Tier.PRO if self.note else None
        return Status(stage=f"{self.name}:{info.context['suffix']}", since=3, at=at, tier=tier)

    @strawberry.field
    def raw_tier(self) -> Tier:  # an enum's value, not its member: the serialiser's to name
        return "PRO"  # type: ignore[return-value]

    @strawberry.field
    def labels(self) -> list[str]:  # a non-null list it may not have
        return None if self.note is None else [self.note]  # type: ignore[return-value]

    @strawberry.field
    async def later_status(self) -> Status:  # a non-null object that waits, and may be absent
        return None if self.note is None else Status(stage="s", since=1, at=EPOCH, tier=None)  # type: ignore[return-value]

    @strawberry.field
    def parent(self) -> Row:  # a non-null object whose own fields wait, and may be absent
        return None if self.note is None else self  # type: ignore[return-value]

    @strawberry.field
    def required_status(self) -> Status:  # a non-null object it may not have
        return None if self.note is None else Status(stage="s", since=1, at=EPOCH, tier=None)  # type: ignore[return-value]


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ROWS = [
    Row(name="a", note="x", tier=Tier.PRO, flag=True),
    Row(name="b", note=None, tier=Tier.FREE, flag=False),
]


@strawberry.type
class Query:
    @strawberry.field
    def rows(self) -> list[Row]:
        return ROWS


SCHEMA = strawberry.Schema(query=Query)


def compiled(query: str) -> dict[str, Any]:
    planner = Planner(SCHEMA._schema, partial(validate, SCHEMA._schema), max_tokens=1000)
    doc = planner.document(query, None)
    assert doc is not None
    variables = planner.variables(doc, {})
    assert variables is not None
    steps = Compiler(SCHEMA).steps(doc.root, planner.tree(doc, variables), doc.compiled)
    assert steps is not None
    context: Any = {"suffix": "s"}
    answer = asyncio.run(execute(steps, None, Run(Info(context), variables)))
    return orjson.loads(orjson.dumps(answer))  # as FastPath writes it: some values orjson's


def reference(query: str) -> dict[str, Any]:
    result = SCHEMA.execute_sync(query, context_value={"suffix": "s"})
    assert result.errors is None
    assert result.data is not None
    return result.data


@pytest.mark.parametrize(
    "query",
    [
        "{ rows { name label tier flag } }",
        "{ rows { __typename n: name t: tier ... on Row { label } status { stage since } } }",
        "{ rows { status { __typename stage } tier name } }",
        "{ rows { status { at tier since } rawTier } }",
    ],
)
def test_it_answers_as_strawberry_does(query: str) -> None:
    assert compiled(query) == reference(query)


def test_a_null_where_the_schema_promises_a_value_goes_to_strawberry() -> None:
    # given a row whose non-null field resolves to None
    # when the generated completion meets it
    # then strawberry answers the request (its error, path and null propagation)
    with pytest.raises(Unsupported):
        compiled("{ rows { name requiredLabel } }")


@pytest.mark.parametrize(
    "query",
    [
        "{ rows { requiredStatus { stage } } }",
        "{ rows { labels } }",
        "{ rows { laterStatus { stage } } }",
        "{ rows { parent { laterStatus { stage } } } }",
    ],
)
def test_a_missing_non_null_value_of_any_kind_goes_to_strawberry(query: str) -> None:
    # given a row whose non-null object, list, awaited object or object with awaited fields
    # resolves to None
    # when its completion meets it, then strawberry answers the request
    with pytest.raises(Unsupported):
        compiled(query)


@given(st.datetimes(timezones=st.just(UTC)))
def test_orjson_writes_a_utc_datetime_as_the_datetime_scalar_does(value: datetime) -> None:
    # the generated completion leaves UTC datetimes to orjson (compiled._JSON_NATIVE)
    serialize = SCHEMA._schema.type_map["DateTime"].serialize
    assert orjson.dumps(value) == orjson.dumps(serialize(value))
