"""The compiled path's document cache: bounded by text, least recently used out."""

from __future__ import annotations

import uuid

from graphql import DocumentNode, GraphQLError

from customer360.gql.plan import Planner
from customer360.gql.schema import build_schema

DOC = '{ customer(id: "%s") { name lifecycle { stage } } }'


def planner(budget: int) -> tuple[Planner, list[DocumentNode]]:
    schema = build_schema()
    validated: list[DocumentNode] = []

    def validate(document: DocumentNode) -> list[GraphQLError]:
        validated.append(document)
        return schema.validate(document)

    return Planner(schema._schema, validate, max_tokens=1000, budget=budget), validated


def test_a_document_is_validated_once_while_it_is_held() -> None:
    given, validated = planner(budget=10_000)
    query = DOC % uuid.uuid4()
    first = given.document(query, None)
    assert first is not None
    assert given.document(query, None) is first
    assert len(validated) == 1


def test_the_text_held_stays_within_the_budget_and_the_least_recent_goes_first() -> None:
    size = len(DOC % uuid.uuid4())
    given, validated = planner(budget=10 * size)
    queries = [DOC % uuid.uuid4() for _ in range(12)]
    for q in queries[:10]:
        given.document(q, None)
    given.document(queries[0], None)  # used again: now the most recent
    given.document(queries[10], None)  # over budget: queries[1] goes
    given.document(queries[11], None)  # and queries[2]
    assert given.held <= 10 * size
    validated.clear()
    given.document(queries[0], None)
    given.document(queries[3], None)
    assert validated == []
    given.document(queries[1], None)
    assert len(validated) == 1


def test_invalid_documents_are_remembered_as_such() -> None:
    given, validated = planner(budget=10_000)
    assert given.document("{ customer { nope } }", None) is None
    assert given.document("{ customer { nope } }", None) is None
    assert len(validated) == 1
