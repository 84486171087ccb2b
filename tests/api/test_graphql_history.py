"""A customer's lifecycle history, stage durations and stage at an instant."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from customer360.auth.ratelimit import Unlimited
from customer360.lifecycle import DomainError
from customer360.usecases import UseCases
from tests.helpers import command, created_event, error_of, move, ts

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


async def test_stage_durations(api, engine):
    # given a customer whose stays lasted known times: Prospect 100 s, Onboarded 200 s,
    # Active 300 s, At-Risk 400 s, and Active again since then (written with a fixed clock)
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    times = iter(t0 + timedelta(seconds=s) for s in (0, 100, 300, 600, 1000))
    usecases = UseCases(engine, limiter=Unlimited(), clock=lambda: next(times))
    created = created_event(api.tenant)
    await usecases.apply_event(created)
    cid = uuid.UUID(created["data"]["customer_id"])
    for stage, reason in (
        ("Onboarded", None),
        ("Active", None),
        ("At-Risk", "Low"),
        ("Active", None),
    ):
        (outcome,) = (
            await usecases.update_stages([command(api.tenant, cid, stage, reason_code=reason)])
        ).outcomes
        assert not isinstance(outcome, DomainError), outcome
    # when its stage durations are read
    body = await api.gql(DURATIONS, {"id": str(cid)})
    assert "errors" not in body, body
    durations = {d["stage"]: d for d in body["data"]["customer"]["stageDurations"]}
    # then one entry per stage ever visited, with entry counts
    assert {s: d["entries"] for s, d in durations.items()} == {
        "Prospect": 1,
        "Onboarded": 1,
        "Active": 2,
        "At-Risk": 1,
    }
    # and the time spent in each, the current stay counted until now
    seconds = {s: d["totalSeconds"] for s, d in durations.items()}
    assert {s: seconds[s] for s in ("Prospect", "Onboarded", "At-Risk")} == {
        "Prospect": 100,
        "Onboarded": 200,
        "At-Risk": 400,
    }
    since = (datetime.now(UTC) - (t0 + timedelta(seconds=1000))).total_seconds()
    assert 300 + since - 5 <= seconds["Active"] <= 300 + since
    # and only the current stage has no exit yet
    assert durations["Active"]["lastExitedAt"] is None
    assert ts(durations["Active"]["firstEnteredAt"]) == t0 + timedelta(seconds=300)
    assert ts(durations["Active"]["lastEnteredAt"]) == t0 + timedelta(seconds=1000)
    assert ts(durations["At-Risk"]["lastExitedAt"]) == t0 + timedelta(seconds=1000)


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
