"""CloudEvent handlers on real PostgreSQL: the code path the Kafka consumers will use."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from customer360.data.queries import Reads
from customer360.usecases import EventRejected, Outcome
from tests.helpers import apply_event, created_event, event, renewed_event, seal


async def rows(engine: AsyncEngine, sql: str, **params: object) -> list:  # type: ignore[type-arg]
    async with engine.connect() as c:
        return list(await c.execute(text(sql), params))


async def test_created_customer_starts_in_the_initial_stage_with_one_system_row(
    engine: AsyncEngine, tenant: str
) -> None:
    ev = created_event(tenant, tier="enterprise", source="ignored")
    ev["source"] = "crm-prod"
    assert await apply_event(engine, ev) is Outcome.APPLIED
    cid = uuid.UUID(ev["data"]["customer_id"])
    (c,) = await rows(
        engine, "SELECT * FROM customers WHERE tenant_id=:t AND id=:c", t=tenant, c=cid
    )
    assert (c.stage, c.version, c.tier, c.source, c.lifecycle_updated_by) == (
        "Prospect",
        1,
        "ENTERPRISE",
        "SYSTEM",
        "crm-prod",
    )
    (h,) = await rows(engine, "SELECT * FROM lifecycle_history_all WHERE customer_id=:c", c=cid)
    assert (h.from_stage, h.to_stage, h.source, h.changed_by, h.reason_code) == (
        None,
        "Prospect",
        "SYSTEM",
        "crm-prod",
        None,
    )
    await seal(engine)  # its audit event's outbox row is the seal's (migration 0017)
    assert len(await rows(engine, "SELECT 1 FROM outbox WHERE key=:k", k=str(cid))) == 1


async def test_an_event_seen_before_changes_nothing(engine: AsyncEngine, tenant: str) -> None:
    ev = created_event(tenant)
    assert await apply_event(engine, ev) is Outcome.APPLIED
    ev["data"]["name"] = "Changed"
    assert await apply_event(engine, ev) is Outcome.DUPLICATE
    cid = ev["data"]["customer_id"]
    (c,) = await rows(engine, "SELECT name FROM customers WHERE id=:c", c=uuid.UUID(cid))
    assert c.name != "Changed"
    await seal(engine)
    assert len(await rows(engine, "SELECT 1 FROM outbox WHERE key=:k", k=cid)) == 1


async def test_updated_changes_only_the_fields_sent_and_moves_updated_at(
    engine: AsyncEngine, tenant: str, make_customer
) -> None:
    cid = await make_customer(name="Old", phone="+1", tags=["a"])
    (before,) = await rows(engine, "SELECT * FROM customers WHERE id=:c", c=cid)
    await apply_event(
        engine,
        event(
            "customer.updated",
            tenant,
            {"customer_id": str(cid), "name": "New", "tags": ["b", "b", "c"], "unknown_field": 1},
        ),
    )
    (after,) = await rows(engine, "SELECT * FROM customers WHERE id=:c", c=cid)
    opened = (await Reads(engine).customers_by_id(tenant, [cid]))[cid]
    assert (opened.name, opened.phone, opened.tags) == ("New", "+1", ["b", "c"])
    assert after.phone.startswith("v1.")  # stored sealed
    assert after.updated_at > before.updated_at and after.version == before.version


async def test_contract_renewed_counts_and_moves_the_stage_by_the_tenant_rule(
    engine: AsyncEngine, tenant: str, make_customer
) -> None:
    cid = await make_customer()
    ev = renewed_event(tenant, cid, contract_id="K-1", source="billing")
    assert await apply_event(engine, ev) is Outcome.APPLIED
    (m,) = await rows(engine, "SELECT * FROM customer_metrics WHERE customer_id=:c", c=cid)
    assert m.contract_renewal_count == 1 and m.last_contract_renewed_at.year == 2025
    last = (
        await rows(
            engine,
            "SELECT * FROM lifecycle_history_all WHERE customer_id=:c "
            "ORDER BY version DESC LIMIT 1",
            c=cid,
        )
    )[0]
    assert (last.from_stage, last.to_stage, last.source, last.changed_by, last.reason_code) == (
        "Prospect",
        "Active",
        "EVENT_LISTENER",
        "billing",
        "contract.renewed",
    )


async def test_an_event_rule_obeys_the_transition_rules(
    engine: AsyncEngine, tenant: str, make_customer, api
) -> None:
    # given a tenant where Prospect may only move to Onboarded
    body = await api.as_("ROLE_TENANT_ADMIN").gql(
        """mutation { configureLifecycleStages(input: {
             stages: ["Prospect", "Onboarded", "Active"],
             transitions: [{from: "Prospect", to: ["Onboarded"]}],
             eventRules: [{eventType: "contract.renewed", toStage: "Active"}]}) { version } }"""
    )
    assert body["data"]["configureLifecycleStages"]["version"] == 1
    cid = await make_customer()
    # when a renewal arrives, the metric counts but the refused move is skipped
    await apply_event(
        engine,
        renewed_event(tenant, cid),
    )
    (c,) = await rows(engine, "SELECT stage, version FROM customers WHERE id=:c", c=cid)
    assert (c.stage, c.version) == ("Prospect", 1)
    (m,) = await rows(
        engine, "SELECT contract_renewal_count FROM customer_metrics WHERE customer_id=:c", c=cid
    )
    assert m.contract_renewal_count == 1


async def test_support_issues_count_even_when_close_arrives_before_open(
    engine: AsyncEngine, tenant: str, make_customer
) -> None:
    cid = await make_customer()
    d = {"customer_id": str(cid), "issue_id": "S-1"}
    await apply_event(
        engine, event("support.issue.closed", tenant, d | {"closed_at": "2025-07-02T00:00:00Z"})
    )
    await apply_event(
        engine,
        event(
            "support.issue.opened",
            tenant,
            d | {"opened_at": "2025-07-01T00:00:00Z", "priority": "high"},
        ),
    )
    await apply_event(
        engine,
        event(
            "support.issue.opened",
            tenant,
            {"customer_id": str(cid), "issue_id": "S-2", "opened_at": "2025-07-03T00:00:00Z"},
        ),
    )
    (m,) = await rows(engine, "SELECT * FROM customer_metrics WHERE customer_id=:c", c=cid)
    assert (m.open_support_issues, m.closed_support_issues) == (1, 1)
    assert m.last_support_issue_closed_at.day == 2


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda e: e.pop("tenantid"), "tenantid"),
        (lambda e: e.update(specversion="0.3"), "specversion"),
        (lambda e: e.update(type="customer.deleted"), "unsupported"),
        (lambda e: e.update(data="x"), "data"),
        (lambda e: e["data"].update(customer_id="not-a-uuid"), "UUID"),
        (lambda e: e["data"].update(tier="GOLD"), "tier"),
        (lambda e: e["data"].update(tags="vip"), "tags"),
        (lambda e: e["data"].pop("name"), "name"),
        (lambda e: e.pop("id"), "id"),
    ],
)
async def test_bad_events_are_rejected_with_a_reason_and_write_nothing(
    engine: AsyncEngine, tenant: str, mutate, reason: str
) -> None:
    ev = created_event(tenant)
    mutate(ev)
    with pytest.raises(EventRejected, match=reason):
        await apply_event(engine, ev)
    assert await rows(engine, "SELECT 1 FROM customers WHERE tenant_id=:t", t=tenant) == []


@pytest.mark.parametrize(
    "type_",
    ["customer.updated", "contract.renewed", "support.issue.opened", "support.issue.closed"],
)
async def test_events_for_an_unknown_customer_are_rejected_and_not_marked(
    engine: AsyncEngine, tenant: str, type_: str
) -> None:
    data = {
        "customer_id": str(uuid.uuid4()),
        "contract_id": "K",
        "renewed_at": "2025-01-01T00:00:00Z",
        "issue_id": "I",
        "opened_at": "2025-01-01T00:00:00Z",
        "closed_at": "2025-01-01T00:00:00Z",
    }
    ev = event(type_, tenant, data)
    with pytest.raises(EventRejected, match="unknown customer"):
        await apply_event(engine, ev)
    # not remembered: once the customer exists, the same event applies
    assert await rows(engine, "SELECT 1 FROM processed_events WHERE event_id=:i", i=ev["id"]) == []


async def test_a_customer_of_another_tenant_is_unknown(
    engine: AsyncEngine, tenant: str, make_customer
) -> None:
    cid = await make_customer(tenant_id="someone-else-" + tenant)
    with pytest.raises(EventRejected, match="unknown customer"):
        await apply_event(
            engine, event("customer.updated", tenant, {"customer_id": str(cid), "name": "x"})
        )


async def test_one_event_reads_and_locks_the_configuration_once(
    engine: AsyncEngine, tenant: str, make_customer
) -> None:
    from sqlalchemy import event as sa_event

    cid = await make_customer()
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        if "stage_configs" in statement or "pg_advisory_xact_lock_shared" in statement:
            seen.append(statement)

    sa_event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        await apply_event(
            engine,
            renewed_event(tenant, cid),
        )
    finally:
        sa_event.remove(engine.sync_engine, "before_cursor_execute", record)
    assert len(seen) == 2  # the shared lock, then the configuration; the move reuses both


async def test_an_unreachable_database_is_an_outage_to_wait_out_not_a_bad_event(tenant) -> None:
    from customer360.auth.ratelimit import Unlimited
    from customer360.data.db import make_engine
    from customer360.devstack import free_port
    from customer360.usecases import BackendUnavailable, UseCases

    engine = make_engine(f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nowhere")
    try:
        with pytest.raises(BackendUnavailable):
            await UseCases(engine, limiter=Unlimited()).apply_event(created_event(tenant))
    finally:
        await engine.dispose()
