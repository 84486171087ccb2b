"""The customer list does not issue a query per row (no N+1)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy import event

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


async def statements_for(server: Any, api: Any, first: int) -> list[str]:
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        text = " ".join(statement.split())
        # the outbox relay shares the engine; its statements are not the request's
        # (set_config scopes each read's transaction to its tenant: one per statement, never
        # per row, and counted with the statements it scopes)
        if (
            "outbox" not in text
            and "pg_" not in text
            and "set_config" not in text
            and text != "SELECT 1"
        ):
            statements.append(text[:70])

    sync_engine = server.engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", record)
    try:
        body = await api.gql(LIST, {"first": first})
    finally:
        event.remove(sync_engine, "before_cursor_execute", record)
    assert "errors" not in body, body
    assert len(body["data"]["customers"]["edges"]) == first
    return statements


async def test_customer_list_statement_count_does_not_grow_with_page_size(
    server, api, make_customer
):
    # given 50 customers
    for _ in range(50):
        await make_customer()
    # when pages of 5 and of 50 are read with lifecycle and metrics per row
    small = await statements_for(server, api, 5)
    large = await statements_for(server, api, 50)
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
