"""The customer list does not issue a query per row (no N+1)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import pytest

from customer360.app import create_app
from tests.conftest import Api, run_server

LIST = """
query($first: Int) {
  customers(first: $first) {
    edges {
      node {
        id
        lifecycle { stage allowedNextStages }
        metrics { openSupportIssues daysInStage }
      }
    }
  }
}
"""


async def statements_for(app: Any, api: Any, first: int) -> list[str]:
    statements: list[str] = []

    def record(statement: str) -> None:
        statements.append(" ".join(statement.split())[:70])

    # every read of the request goes through Reads (data/queries.py), each in its own short
    # tenant-scoped transaction
    observers = app.state.services.reads.observers
    observers.append(record)
    try:
        body = await api.gql(LIST, {"first": first})
    finally:
        observers.remove(record)
    assert "errors" not in body, body
    assert len(body["data"]["customers"]["edges"]) == first
    return statements


@pytest.mark.parametrize("path", ["on", "off"])  # the compiled path, and strawberry alone
async def test_customer_list_statement_count_does_not_grow_with_page_size(
    settings, api, make_customer, path
):
    # given 50 customers
    for _ in range(50):
        await make_customer()
    # when pages of 5 and of 50 are read with lifecycle and metrics per row
    app = create_app(
        settings.model_copy(update={"graphql_compiled": path, "kafka_bootstrap": "off"})
    )
    async with run_server(app) as url, httpx.AsyncClient(base_url=url) as http:
        client = Api(http, api.tenant)
        small = await statements_for(app, client, 5)
        large = await statements_for(app, client, 50)
    # then no statement runs once per row: each kind runs at most once per request, and the
    # large page needs no kind the small one did not (the tenant's stage configuration may
    # and its data key come from per-process caches on the second request, so they may be
    # missing there)
    assert small
    for page in (small, large):
        assert max(Counter(page).values()) == 1, Counter(page).most_common(3)
    config = {s for s in small + large if "FROM stage_configs" in s or "kek_id" in s}
    assert set(large) - config == set(small) - config
    assert len(set(large) - config) == 2  # the page, and the metrics of all its rows
