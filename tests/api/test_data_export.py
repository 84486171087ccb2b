"""Data subject access (GDPR art. 15/20) over GraphQL and `c360 export`, on real servers."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import DATA_KEY, Api
from tests.helpers import (
    apply_event,
    created_event,
    error_of,
    event,
    move,
    new_tenant,
    renewed_event,
    use_cases,
)
from tests.test_cli import clean_env, run

ADMIN = "ROLE_TENANT_ADMIN"
EXPORT = """
mutation($id: ID!) { exportCustomerData(customerId: $id) {
  format version exportId exportedAt exportedBy tenantId customerId erased erasedAt
  profile { name email phone companyName tier tags assignedTo createdAt updatedAt deletedAt }
  lifecycle { stage enteredAt updatedAt updatedBy reasonCode source version }
  history { id version fromStage toStage changedAt changedBy reasonCode source configVersion
            causedBy { source id type } }
  metrics { openSupportIssues closedSupportIssues lastSupportIssueClosedAt
            contractRenewalCount lastContractRenewedAt }
  supportIssues { issueId priority openedAt closedAt }
  contractRenewals { contractId renewedAt }
} }
"""
RECORDS = """
query($id: ID) { customerDataExports(customerId: $id) {
  id customerId exportedBy exportedAt channel customerErased } }
"""


def _same_time(a: str | None, b: str | None) -> bool:
    from datetime import datetime

    if a is None or b is None:
        return a is b
    return datetime.fromisoformat(a) == datetime.fromisoformat(b)


async def _rich_customer(
    engine: AsyncEngine, api: Api
) -> tuple[uuid.UUID, dict[str, Any], list[str]]:
    """A customer with a profile, an event-driven change, a user's change, issues and a
    renewal; returns its id, its creation data and the ids of the events that moved it."""
    created = created_event(
        api.tenant, email="Ada.Lovelace@Example.com", phone="+44 20 7946 0958", tags=["vip", "eu"]
    )
    await apply_event(engine, created)
    cid = uuid.UUID(created["data"]["customer_id"])
    renewal = renewed_event(api.tenant, cid, contract_id="K-1", renewed_at="2025-07-01T10:00:00Z")
    await apply_event(engine, renewal)
    issue = {"customer_id": str(cid), "issue_id": "I-1", "priority": "high"}
    await apply_event(
        engine,
        event("support.issue.opened", api.tenant, issue | {"opened_at": "2025-07-02T00:00:00Z"}),
    )
    await apply_event(
        engine,
        event("support.issue.closed", api.tenant, issue | {"closed_at": "2025-07-03T00:00:00Z"}),
    )
    await move(api, cid, "At-Risk", "NO_RESPONSE")
    return cid, created["data"], [created["id"], renewal["id"]]


async def test_an_admin_export_round_trips_every_field_and_the_cli_writes_the_same(
    api: Api, engine: AsyncEngine, database_url: str, tmp_path: Path
) -> None:
    # given a customer with everything the service keeps about one
    cid, data, caused = await _rich_customer(engine, api)
    admin = api.as_(ADMIN, sub="admin-1")
    # when its tenant's admin exports it
    body = await admin.gql(EXPORT, {"id": str(cid)})
    assert "errors" not in body, body
    got = body["data"]["exportCustomerData"]
    # then every field is there, email and phone opened
    assert (got["format"], got["version"]) == ("c360.customer-export", 1)
    assert (got["tenantId"], got["customerId"], got["exportedBy"]) == (
        api.tenant,
        str(cid),
        "admin-1",
    )
    assert (got["erased"], got["erasedAt"]) == (False, None)
    p = got["profile"]
    assert p["name"] == data["name"] and p["companyName"] == "Acme Corp"
    assert (p["email"], p["phone"]) == ("Ada.Lovelace@Example.com", "+44 20 7946 0958")
    assert (p["tier"], p["tags"], p["assignedTo"], p["deletedAt"]) == (
        "PRO",
        ["vip", "eu"],
        "user-1",
        None,
    )
    async with engine.connect() as c:
        row = (
            await c.execute(
                text("SELECT * FROM customers WHERE tenant_id = :t AND id = :id"),
                {"t": api.tenant, "id": cid},
            )
        ).one()
    assert _same_time(p["createdAt"], row.created_at.isoformat())
    assert _same_time(p["updatedAt"], row.updated_at.isoformat())
    lc = got["lifecycle"]
    assert (lc["stage"], lc["reasonCode"], lc["source"], lc["version"]) == (
        "At-Risk",
        "NO_RESPONSE",
        "API",
        3,
    )
    assert lc["updatedBy"] == api.sub and _same_time(
        lc["enteredAt"], row.stage_entered_at.isoformat()
    )
    # the full history, oldest first, each change caused by an event naming that event
    hist = got["history"]
    assert [(h["fromStage"], h["toStage"], h["version"]) for h in hist] == [
        (None, "Prospect", 1),
        ("Prospect", "Active", 2),
        ("Active", "At-Risk", 3),
    ]
    assert [h["causedBy"] and h["causedBy"]["id"] for h in hist] == [*caused, None]
    assert hist[0]["causedBy"] == {"source": "crm", "id": caused[0], "type": "customer.created"}
    assert (
        hist[1]["causedBy"]["type"] == "contract.renewed" and hist[1]["source"] == "EVENT_LISTENER"
    )
    assert hist[2]["source"] == "API" and hist[2]["reasonCode"] == "NO_RESPONSE"
    assert all(h["configVersion"] == 0 for h in hist)
    m = got["metrics"]
    assert (m["openSupportIssues"], m["closedSupportIssues"], m["contractRenewalCount"]) == (
        0,
        1,
        1,
    )
    assert _same_time(m["lastSupportIssueClosedAt"], "2025-07-03T00:00:00+00:00")
    assert _same_time(m["lastContractRenewedAt"], "2025-07-01T10:00:00+00:00")
    (issue,) = got["supportIssues"]
    assert (issue["issueId"], issue["priority"]) == ("I-1", "high")
    assert _same_time(issue["openedAt"], "2025-07-02T00:00:00+00:00")
    (renewal,) = got["contractRenewals"]
    assert renewal["contractId"] == "K-1"

    # when the CLI exports it to a file
    out_file = tmp_path / "export.json"
    env = clean_env(C360_DATABASE_URL=database_url, C360_DATA_KEY=DATA_KEY)
    out = run(
        ["export", "--tenant", api.tenant, "--customer", str(cid), "--out", str(out_file)], env
    )
    assert out.returncode == 0, out.stderr
    assert out_file.stat().st_mode & 0o077 == 0  # personal data: the owner's only
    doc = json.loads(out_file.read_text())
    # then it holds the same content as the GraphQL answer (times compared as instants)
    assert doc["exportedBy"] == "cli" and doc["exportId"] != got["exportId"]

    def normal(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {
                k: normal(v, k)
                for k, v in value.items()
                if k not in ("exportId", "exportedAt", "exportedBy")
            }
        if isinstance(value, list):
            return [normal(v) for v in value]
        if isinstance(value, str) and (key.endswith("At")):
            from datetime import datetime

            return datetime.fromisoformat(value)
        return value

    assert normal(doc) == normal(got)

    # and both exports are recorded where the tenant's admins can see them
    records = (await admin.gql(RECORDS, {"id": str(cid)}))["data"]["customerDataExports"]
    assert [(r["channel"], r["exportedBy"], r["customerId"]) for r in records] == [
        ("cli", "cli", str(cid)),
        ("graphql", "admin-1", str(cid)),
    ]
    assert records[1]["id"] == got["exportId"] and records[0]["id"] == doc["exportId"]
    # and the CLI refuses an unknown customer, recording nothing
    nobody = str(uuid.uuid4())
    assert run(["export", "--tenant", api.tenant, "--customer", nobody], env).returncode == 1
    assert run(["export", "--tenant", api.tenant, "--customer", "nope"], env).returncode == 2
    assert (await admin.gql(RECORDS, {"id": nobody}))["data"]["customerDataExports"] == []


async def test_an_erased_customers_export_says_so_and_holds_no_personal_data(
    api: Api, engine: AsyncEngine, database_url: str
) -> None:
    cid, data, _ = await _rich_customer(engine, api)
    await use_cases(engine).erase(api.tenant, cid)
    body = await api.as_(ADMIN).gql(EXPORT, {"id": str(cid)})
    got = body["data"]["exportCustomerData"]
    assert got["erased"] is True and got["erasedAt"] is not None
    assert got["profile"] is None
    # the history and metrics stay (they are the tenant's records, not personal data)
    assert len(got["history"]) == 3 and got["metrics"]["contractRenewalCount"] == 1
    env = clean_env(C360_DATABASE_URL=database_url, C360_DATA_KEY=DATA_KEY)
    out = run(["export", "--tenant", api.tenant, "--customer", str(cid)], env)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["erased"] is True and doc["profile"] is None
    for dumped in (json.dumps(got), out.stdout):
        for personal in (data["name"], "Ada.Lovelace", "7946", "Acme"):
            assert personal not in dumped
    records = (await api.as_(ADMIN).gql(RECORDS, {"id": str(cid)}))["data"]["customerDataExports"]
    assert [r["customerErased"] for r in records] == [True, True]


async def test_only_the_tenants_admins_export_and_never_a_foreign_customer(
    api: Api, engine: AsyncEngine
) -> None:
    cid, _, _ = await _rich_customer(engine, api)
    # roles without administration are refused, for the export and for its records
    for role in ("ROLE_CUSTOMER_VIEWER", "ROLE_ACCOUNT_MANAGER"):
        caller = api.as_(role)
        assert error_of(await caller.gql(EXPORT, {"id": str(cid)}))["code"] == "FORBIDDEN"
        assert error_of(await caller.gql(RECORDS))["code"] == "FORBIDDEN"
    # another tenant's admin finds no such customer, and nothing is recorded
    other = api.as_(ADMIN, tenant=new_tenant())
    assert error_of(await other.gql(EXPORT, {"id": str(cid)}))["code"] == "NOT_FOUND"
    assert (await other.gql(RECORDS))["data"]["customerDataExports"] == []
    # nor may a tenant admin step into the tenant with X-Tenant-Id
    resp = await api.http.post(
        "/graphql",
        json={"query": EXPORT, "variables": {"id": str(cid)}},
        headers=other.headers(**{"X-Tenant-Id": api.tenant}),
    )
    assert resp.status_code == 403
    assert (await api.as_(ADMIN).gql(RECORDS))["data"]["customerDataExports"] == []
    # a super admin may, naming the tenant
    boss = api.as_("ROLE_SUPER_ADMIN", sub="root", tenant=new_tenant("home"))
    body = await boss.gql(EXPORT, {"id": str(cid)}, boss.headers(**{"X-Tenant-Id": api.tenant}))
    assert body["data"]["exportCustomerData"]["profile"]["email"] == "Ada.Lovelace@Example.com"
    # and the tenant's admin sees that export, by whom
    records = (await api.as_(ADMIN).gql(RECORDS))["data"]["customerDataExports"]
    assert [(r["exportedBy"], r["customerId"]) for r in records] == [("root", str(cid))]
    # a malformed id is a bad input
    assert error_of(await api.as_(ADMIN).gql(EXPORT, {"id": "nope"}))["code"] == "BAD_USER_INPUT"
