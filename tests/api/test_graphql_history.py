"""A customer's lifecycle history, stage durations and stage at an instant."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

HISTORY = """
query($id: ID!, $first: Int, $after: String) {
  customer(id: $id) {
    createdAt
    lifecycleHistory(first: $first, after: $after) {
      totalCount
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
      edges {
        cursor
        node { id customerId fromStage toStage changedAt changedBy reasonCode source }
      }
    }
  }
}
"""

DURATIONS = """
query($id: ID!) {
  customer(id: $id) {
    lifecycle { stage }
    stageDurations {
      stage entries firstEnteredAt lastEnteredAt lastExitedAt totalSeconds
    }
  }
}
"""

STAGE_AT = """
query($id: ID!, $at: DateTime!) { customer(id: $id) { stageAt(asOf: $at) } }
"""


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def error_of(body: dict[str, Any]) -> dict[str, Any]:
    assert body.get("errors"), body
    ext: dict[str, Any] = body["errors"][0].get("extensions") or {}
    return ext


async def move(api: Any, cid: uuid.UUID, stage: str, reason: str | None = None) -> None:
    """Set up a stage through the REST shim (the GraphQL mutation is tested on its own)."""
    body: dict[str, Any] = {"stage": stage}
    if reason is not None:
        body["reason_code"] = reason
    resp = await api.patch(cid, body)
    assert resp.status_code == 200, resp.text


async def with_history(api: Any, make_customer: Any) -> uuid.UUID:
    """Prospect (created) -> Onboarded -> Active -> At-Risk -> Active."""
    cid = await make_customer()
    await move(api, cid, "Onboarded")
    await move(api, cid, "Active")
    await move(api, cid, "At-Risk", "Low Engagement")
    await move(api, cid, "Active")
    return cid


async def history(api: Any, cid: uuid.UUID, **variables: Any) -> dict[str, Any]:
    body = await api.gql(HISTORY, {"id": str(cid), **variables})
    assert "errors" not in body, body
    conn: dict[str, Any] = body["data"]["customer"]["lifecycleHistory"]
    return conn


async def test_history_is_newest_first_with_creation_row_last(api, make_customer):
    # given a customer that moved four times after creation
    cid = await with_history(api, make_customer)
    # when its history is read
    conn = await history(api, cid)
    nodes = [e["node"] for e in conn["edges"]]
    # then newest first, five rows, the creation row last
    assert conn["totalCount"] == 5
    assert [(n["fromStage"], n["toStage"]) for n in nodes] == [
        ("At-Risk", "Active"),
        ("Active", "At-Risk"),
        ("Onboarded", "Active"),
        ("Prospect", "Onboarded"),
        (None, "Prospect"),
    ]
    times = [ts(n["changedAt"]) for n in nodes]
    assert times == sorted(times, reverse=True)
    first = nodes[-1]
    assert (first["source"], first["changedBy"], first["reasonCode"]) == ("SYSTEM", "crm", None)
    assert nodes[1]["reasonCode"] == "Low Engagement"
    assert all(n["customerId"] == str(cid) for n in nodes)
    assert all(n["source"] == "API" and n["changedBy"] == api.sub for n in nodes[:-1])
    assert conn["pageInfo"]["hasNextPage"] is False


async def test_history_pages_with_first_and_after(api, make_customer):
    cid = await with_history(api, make_customer)
    everything = [e["node"]["id"] for e in (await history(api, cid))["edges"]]
    # when walking the history two rows at a time
    seen: list[str] = []
    shape: list[tuple[int, bool]] = []
    after = None
    while True:
        page = await history(api, cid, first=2, after=after)
        assert page["totalCount"] == 5
        seen += [e["node"]["id"] for e in page["edges"]]
        shape.append((len(page["edges"]), page["pageInfo"]["hasNextPage"]))
        assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
        assert len(shape) < 10
    # then every row appears once, in order
    assert seen == everything
    assert shape == [(2, True), (2, True), (1, False)]


async def test_history_page_size_and_cursor_rules(api, make_customer):
    cid = await with_history(api, make_customer)
    other = await with_history(api, make_customer)
    # first=0 is fine
    empty = await history(api, cid, first=0)
    assert empty["edges"] == [] and empty["totalCount"] == 5
    # first out of range is BAD_USER_INPUT
    for first in (201, -1):
        body = await api.gql(HISTORY, {"id": str(cid), "first": first})
        assert error_of(body)["code"] == "BAD_USER_INPUT", first
    # a garbage cursor, or one from another customer's history, is INVALID_CURSOR
    foreign = (await history(api, other, first=1))["pageInfo"]["endCursor"]
    for cursor in ("garbage", foreign):
        body = await api.gql(HISTORY, {"id": str(cid), "first": 2, "after": cursor})
        ext = error_of(body)
        assert (ext["code"], ext["reason"]) == ("BAD_USER_INPUT", "INVALID_CURSOR"), cursor


async def test_history_needs_view_history(api, make_customer):
    # given a viewer role without VIEW_HISTORY
    cid = await make_customer()
    viewer = api.as_("ROLE_CUSTOMER_VIEWER")
    # when it asks for the history
    body = await viewer.gql(HISTORY, {"id": str(cid)})
    # then a field-level FORBIDDEN
    assert error_of(body)["code"] == "FORBIDDEN"


async def test_stage_durations(api, make_customer):
    # given a customer that was in Active twice and is there now
    cid = await with_history(api, make_customer)
    body = await api.gql(DURATIONS, {"id": str(cid)})
    assert "errors" not in body, body
    durations = {d["stage"]: d for d in body["data"]["customer"]["stageDurations"]}
    # then one entry per stage ever visited, with entry counts
    assert set(durations) == {"Prospect", "Onboarded", "Active", "At-Risk"}
    assert {s: d["entries"] for s, d in durations.items()} == {
        "Prospect": 1,
        "Onboarded": 1,
        "Active": 2,
        "At-Risk": 1,
    }
    # and only the current stage has no exit yet
    assert durations["Active"]["lastExitedAt"] is None
    for stage in ("Prospect", "Onboarded", "At-Risk"):
        d = durations[stage]
        assert d["lastExitedAt"] is not None
        assert ts(d["lastExitedAt"]) >= ts(d["lastEnteredAt"])
    active = durations["Active"]
    assert ts(active["lastEnteredAt"]) > ts(active["firstEnteredAt"])
    assert all(d["totalSeconds"] >= 0 for d in durations.values())


async def test_stage_at_follows_history(api, make_customer):
    # given a customer that moved after creation
    cid = await with_history(api, make_customer)
    nodes = [e["node"] for e in (await history(api, cid))["edges"]]
    created, onboarded = ts(nodes[-1]["changedAt"]), ts(nodes[-2]["changedAt"])

    async def stage_at(at: datetime) -> str | None:
        body = await api.gql(STAGE_AT, {"id": str(cid), "at": at.isoformat()})
        assert "errors" not in body, body
        value: str | None = body["data"]["customer"]["stageAt"]
        return value

    # then before creation there was no stage
    assert await stage_at(created - timedelta(days=1)) is None
    # at creation it was the initial stage
    assert await stage_at(created) == "Prospect"
    # at the first change, the new stage
    assert await stage_at(onboarded) == "Onboarded"
    # and now the current one
    assert await stage_at(datetime.now(created.tzinfo) + timedelta(hours=1)) == "Active"
