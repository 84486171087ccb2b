"""Which media type a GraphQL client gets, from its Accept header."""

from __future__ import annotations

import pytest

from customer360.gql.responses import prefers_graphql_response

GR, JS = "application/graphql-response+json", "application/json"


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (GR, True),
        (JS, False),
        ("", False),
        ("*/*", False),
        (f"{GR}, {JS}", True),
        (f"{JS}, {GR}", False),
        (f"{JS};q=0.9, {GR}", True),
        (f"{GR};q=0.5, {JS}", False),
        (f"{GR};q=0", False),
        (f"{GR};q=0, {JS}", False),
        (f"{GR};q=oops", False),
        (f"{GR.upper()}; charset=utf-8", True),
        (f"{JS};q=0.5, {GR};q=0.5", False),
        ("application/*", False),
        (f"{GR};q=0.5, */*", False),
        (f"{GR};q=0.5, application/*;q=0.4", True),
        (f"{JS};q=0.1, */*", True),
    ],
)
def test_the_preferred_media_type_wins(accept: str, expected: bool) -> None:
    assert prefers_graphql_response(accept) is expected
