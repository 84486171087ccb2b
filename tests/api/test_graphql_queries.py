"""Queries: one customer, the customer list (filters, orderings, pages), the stage summary."""

from __future__ import annotations

import uuid
from typing import Any

from tests.helpers import DEFAULT_STAGES, error_of, move, ts

CUSTOMER = """
query($id: ID!) {
  customer(id: $id) {
    id tenantId name email phone companyName tier tags assignedTo createdAt updatedAt
    lifecycle { stage enteredAt updatedAt updatedBy reasonCode source version allowedNextStages }
    metrics {
      openSupportIssues closedSupportIssues lastSupportIssueClosedAt
      contractRenewalCount lastContractRenewedAt daysInStage
    }
  }
}
"""

LIST = """
query($filter: CustomerFilter, $orderBy: CustomerOrder, $first: Int, $after: String) {
  customers(filter: $filter, orderBy: $orderBy, first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    edges {
      cursor
      node { id name companyName createdAt updatedAt lifecycle { stage enteredAt } }
    }
  }
}
"""

SUMMARY = "{ lifecycleSummary { total generatedAt stages { stage count } } }"


async def list_customers(api: Any, **variables: Any) -> dict[str, Any]:
    body = await api.gql(LIST, variables)
    assert "errors" not in body, body
    conn: dict[str, Any] = body["data"]["customers"]
    return conn


def ids(conn: dict[str, Any]) -> list[str]:
    return [e["node"]["id"] for e in conn["edges"]]


# --- customer(id) -----------------------------------------------------------------------


async def test_customer_returns_profile_lifecycle_and_metrics(api, make_customer):
    # given a customer created by the CRM with a full profile
    cid = await make_customer(
        name="Ada Lovelace",
        email="ada@example.com",
        phone="+44 20 7946 0000",
        company_name="Analytical Engines Ltd",
        tier="ENTERPRISE",
        tags=["vip", "emea"],
        assigned_to="am-7",
    )
    # when it is fetched by id
    body = await api.gql(CUSTOMER, {"id": str(cid)})
    # then every field reflects the profile and the initial lifecycle
    assert "errors" not in body, body
    c = body["data"]["customer"]
    assert c["id"] == str(cid)
    assert c["tenantId"] == api.tenant
    assert (c["name"], c["email"], c["phone"], c["companyName"]) == (
        "Ada Lovelace",
        "ada@example.com",
        "+44 20 7946 0000",
        "Analytical Engines Ltd",
    )
    assert c["tier"] == "ENTERPRISE"
    assert c["tags"] == ["vip", "emea"]
    assert c["assignedTo"] == "am-7"
    assert ts(c["updatedAt"]) >= ts(c["createdAt"])
    lc = c["lifecycle"]
    assert lc["stage"] == "Prospect"
    assert lc["source"] == "SYSTEM"
    assert lc["updatedBy"] == "crm"
    assert lc["reasonCode"] is None
    assert isinstance(lc["version"], int)
    assert lc["allowedNextStages"] == ["Onboarded", "Active", "At-Risk", "Churned"]
    assert c["metrics"] == {
        "openSupportIssues": 0,
        "closedSupportIssues": 0,
        "lastSupportIssueClosedAt": None,
        "contractRenewalCount": 0,
        "lastContractRenewedAt": None,
        "daysInStage": 0,
    }


async def test_customer_unknown_id_is_null(api, make_customer):
    # given a tenant with one customer
    await make_customer()
    # when an id that does not exist is asked for
    body = await api.gql(CUSTOMER, {"id": str(uuid.uuid4())})
    # then the answer is null, without an error
    assert body == {"data": {"customer": None}}


async def test_customer_of_another_tenant_is_null(api, make_customer):
    # given a customer in another tenant
    other = f"other-{uuid.uuid4().hex[:8]}"
    cid = await make_customer(tenant_id=other)
    # when the viewer of this tenant asks for it
    body = await api.gql(CUSTOMER, {"id": str(cid)})
    # then it is not found (null), never forbidden
    assert body == {"data": {"customer": None}}
    # and its own tenant does see it
    mine = await api.as_("ROLE_ACCOUNT_MANAGER", tenant=other).gql(CUSTOMER, {"id": str(cid)})
    assert mine["data"]["customer"]["id"] == str(cid)


async def test_customer_non_uuid_id_is_bad_user_input_invalid_id(api):
    # when a customer is asked for by an id that is not a UUID
    body = await api.gql(CUSTOMER, {"id": "not-a-uuid"})
    # then it is a BAD_USER_INPUT / INVALID_ID error, not a server error
    ext = error_of(body)
    assert ext["code"] == "BAD_USER_INPUT"
    assert ext["reason"] == "INVALID_ID"
    assert body["data"] is None or body["data"]["customer"] is None


# --- customers: filters -----------------------------------------------------------------


async def test_filter_by_stage_and_stages(api, make_customer):
    # given customers in three different stages
    p = await make_customer()
    a = await make_customer()
    r = await make_customer()
    await move(api, a, "Active")
    await move(api, r, "At-Risk", "payment-late")
    # when filtering by one stage
    at_risk = await list_customers(api, filter={"stage": "At-Risk"})
    # then only that stage's customers come back
    assert ids(at_risk) == [str(r)]
    assert at_risk["totalCount"] == 1
    # and by several stages
    several = await list_customers(api, filter={"stages": ["Prospect", "Active"]})
    assert set(ids(several)) == {str(p), str(a)}
    assert several["totalCount"] == 2
    # and a stage nobody is in gives an empty list
    none = await list_customers(api, filter={"stage": "Churned"})
    assert none["edges"] == [] and none["totalCount"] == 0


async def test_filter_by_tier_tag_and_assignee(api, make_customer):
    # given customers with different tiers, tags and account managers
    free = await make_customer(tier="FREE", tags=["trial"], assigned_to="am-1")
    pro = await make_customer(tier="PRO", tags=["vip", "emea"], assigned_to="am-2")
    ent = await make_customer(tier="ENTERPRISE", tags=["emea"], assigned_to="am-2")
    # when filtering by each attribute
    by_tier = await list_customers(api, filter={"tier": "PRO"})
    by_tag = await list_customers(api, filter={"tag": "emea"})
    by_am = await list_customers(api, filter={"assignedTo": "am-1"})
    combined = await list_customers(api, filter={"tag": "emea", "tier": "ENTERPRISE"})
    # then each returns exactly the matching customers
    assert ids(by_tier) == [str(pro)]
    assert set(ids(by_tag)) == {str(pro), str(ent)}
    assert by_tag["totalCount"] == 2
    assert ids(by_am) == [str(free)]
    assert ids(combined) == [str(ent)]


async def test_search_is_case_insensitive_substring_of_name_or_company(api, make_customer):
    # given customers with distinctive names, companies and emails
    by_name = await make_customer(
        name="Zephyrine Quartz", company_name="Plain Co", email="zq@example.com"
    )
    by_company = await make_customer(
        name="Bob Plain", company_name="Globexian Industries", email="bob@example.com"
    )
    await make_customer(name="Carol Other", company_name="Other Co", email="carol@example.com")
    # when searching with a differently-cased substring
    name_hit = await list_customers(api, filter={"search": "PHYRINE q"})
    company_hit = await list_customers(api, filter={"search": "gLoBeXiAn"})
    miss = await list_customers(api, filter={"search": "nobody-matches-this"})
    # then the name / company substring matches
    assert ids(name_hit) == [str(by_name)]
    assert ids(company_hit) == [str(by_company)]
    assert ids(miss) == [] and miss["totalCount"] == 0


async def test_search_matches_exact_email_only(api, make_customer):
    # given a customer with a distinctive email
    cid = await make_customer(
        name="Dana Email", company_name="Mail Co", email="dana.unique42@example.org"
    )
    await make_customer(name="Someone Else", company_name="Else Co", email="else@example.org")
    # when searching by the whole email in another case
    exact = await list_customers(api, filter={"search": "DANA.Unique42@Example.ORG"})
    # then it matches
    assert ids(exact) == [str(cid)]
    # and a mere part of the email does not
    partial = await list_customers(api, filter={"search": "unique42@example"})
    assert ids(partial) == []


# --- customers: orderings ---------------------------------------------------------------


async def test_order_created_at_desc_is_default(api, make_customer):
    # given customers created one after another
    created = [await make_customer() for _ in range(4)]
    # when listing without an ordering and with CREATED_AT_DESC
    default = await list_customers(api)
    explicit = await list_customers(api, orderBy="CREATED_AT_DESC")
    # then the newest comes first, ties broken consistently
    assert ids(default) == [str(c) for c in reversed(created)]
    assert ids(explicit) == ids(default)
    keys = [(ts(e["node"]["createdAt"]), e["node"]["id"]) for e in explicit["edges"]]
    assert keys == sorted(keys, reverse=True)


async def test_order_name_asc(api, make_customer):
    # given customers created in an order unrelated to their names
    for name in ["Delta Dawn", "Alpha Ant", "Charlie Cat", "Bravo Bee"]:
        await make_customer(name=name)
    # when ordered by name
    conn = await list_customers(api, orderBy="NAME_ASC")
    # then names ascend
    assert [e["node"]["name"] for e in conn["edges"]] == [
        "Alpha Ant",
        "Bravo Bee",
        "Charlie Cat",
        "Delta Dawn",
    ]


async def test_order_updated_at_desc(api, make_customer):
    # given three customers, the oldest of which is then changed
    oldest = await make_customer()
    await make_customer()
    await make_customer()
    await move(api, oldest, "Onboarded")
    # when ordered by updatedAt
    conn = await list_customers(api, orderBy="UPDATED_AT_DESC")
    # then the most recently changed customer comes first and updatedAt descends
    assert ids(conn)[0] == str(oldest)
    keys = [(ts(e["node"]["updatedAt"]), e["node"]["id"]) for e in conn["edges"]]
    assert keys == sorted(keys, reverse=True)


async def test_order_stage_entered_at_desc(api, make_customer):
    # given customers where the oldest, then the second, entered a new stage last
    first = await make_customer()
    second = await make_customer()
    third = await make_customer()
    await move(api, first, "Active")
    await move(api, second, "Onboarded")
    # when ordered by stage entry time
    conn = await list_customers(api, orderBy="STAGE_ENTERED_AT_DESC")
    # then the latest stage entries come first
    assert ids(conn) == [str(second), str(first), str(third)]
    keys = [(ts(e["node"]["lifecycle"]["enteredAt"]), e["node"]["id"]) for e in conn["edges"]]
    assert keys == sorted(keys, reverse=True)


# --- customers: pages -------------------------------------------------------------------


async def test_keyset_pagination_walks_every_order_without_gaps(api, make_customer):
    # given five customers with distinct names
    for name in ["Eve", "Ann", "Dan", "Bea", "Cid"]:
        await make_customer(name=name)
    for order in ["CREATED_AT_DESC", "UPDATED_AT_DESC", "NAME_ASC", "STAGE_ENTERED_AT_DESC"]:
        full = await list_customers(api, orderBy=order, first=200)
        # when walking the list two at a time
        seen: list[str] = []
        pages: list[tuple[int, bool, bool]] = []
        after = None
        while True:
            page = await list_customers(api, orderBy=order, first=2, after=after)
            assert page["totalCount"] == 5
            seen += ids(page)
            info = page["pageInfo"]
            pages.append((len(page["edges"]), info["hasNextPage"], info["hasPreviousPage"]))
            assert info["startCursor"] == page["edges"][0]["cursor"]
            assert info["endCursor"] == page["edges"][-1]["cursor"]
            if not info["hasNextPage"]:
                break
            after = info["endCursor"]
            assert len(pages) < 10
        # then the pages hold every customer once, in the same order as one big page
        assert seen == ids(full), order
        assert len(set(seen)) == 5
        assert pages == [(2, True, False), (2, True, True), (1, False, True)], order


async def test_first_zero_returns_no_edges_but_counts(api, make_customer):
    # given two customers
    await make_customer()
    await make_customer()
    # when asking for zero of them
    conn = await list_customers(api, first=0)
    # then no edges, but the count and a next page
    assert conn["edges"] == []
    assert conn["totalCount"] == 2
    assert conn["pageInfo"]["hasNextPage"] is True


async def test_first_out_of_range_is_bad_user_input(api, make_customer):
    await make_customer()
    for first in (201, -1):
        # when the page size is out of range
        body = await api.gql(LIST, {"first": first})
        # then BAD_USER_INPUT
        assert error_of(body)["code"] == "BAD_USER_INPUT", first
    # while the maximum itself is fine
    assert (await list_customers(api, first=200))["totalCount"] == 1


async def test_garbage_cursor_is_invalid_cursor(api, make_customer):
    await make_customer()
    for garbage in ["garbage", "!!!", "eyJmb28iOiAxfQ", "WyJ4IiwgWzFdXQ"]:
        # when an unreadable cursor is passed
        body = await api.gql(LIST, {"first": 2, "after": garbage})
        # then INVALID_CURSOR
        ext = error_of(body)
        assert (ext["code"], ext["reason"]) == ("BAD_USER_INPUT", "INVALID_CURSOR"), garbage


async def test_empty_cursor_is_invalid_cursor(api, make_customer):
    # given a tenant with customers
    await make_customer()
    # when `after` is an empty string (no cursor the server ever issued)
    body = await api.gql(LIST, {"first": 2, "after": ""})
    # then it is unreadable: INVALID_CURSOR, not silently the first page
    ext = error_of(body)
    assert (ext["code"], ext["reason"]) == ("BAD_USER_INPUT", "INVALID_CURSOR")


async def test_cursor_from_another_ordering_is_invalid_cursor(api, make_customer):
    # given a cursor made for the NAME_ASC ordering
    for _ in range(3):
        await make_customer()
    page = await list_customers(api, orderBy="NAME_ASC", first=1)
    cursor = page["pageInfo"]["endCursor"]
    # when it is used with another ordering
    body = await api.gql(LIST, {"orderBy": "CREATED_AT_DESC", "first": 1, "after": cursor})
    # then INVALID_CURSOR
    ext = error_of(body)
    assert (ext["code"], ext["reason"]) == ("BAD_USER_INPUT", "INVALID_CURSOR")


async def test_cursor_from_another_tenant_is_invalid_cursor(api, make_customer):
    # given a cursor made in another tenant
    other = f"other-{uuid.uuid4().hex[:8]}"
    for _ in range(2):
        await make_customer(tenant_id=other)
        await make_customer()
    theirs = await list_customers(api.as_("ROLE_ACCOUNT_MANAGER", tenant=other), first=1)
    cursor = theirs["pageInfo"]["endCursor"]
    # when this tenant uses it with the same ordering
    body = await api.gql(LIST, {"first": 1, "after": cursor})
    # then INVALID_CURSOR
    ext = error_of(body)
    assert (ext["code"], ext["reason"]) == ("BAD_USER_INPUT", "INVALID_CURSOR")


# --- lifecycleSummary -------------------------------------------------------------------


async def test_summary_lists_every_configured_stage_with_zeros(api):
    # given a tenant without customers
    # when the summary is read
    body = await api.gql(SUMMARY)
    # then every configured stage is there, in order, with zero counts
    s = body["data"]["lifecycleSummary"]
    assert s["stages"] == [{"stage": st, "count": 0} for st in DEFAULT_STAGES]
    assert s["total"] == 0
    assert ts(s["generatedAt"])


async def test_summary_totals_follow_mutations(api, make_customer):
    # given three new customers
    cids = [await make_customer() for _ in range(3)]
    before = (await api.gql(SUMMARY))["data"]["lifecycleSummary"]
    assert before["total"] == 3
    assert dict((x["stage"], x["count"]) for x in before["stages"]) == {
        "Prospect": 3,
        "Onboarded": 0,
        "Active": 0,
        "At-Risk": 0,
        "Churned": 0,
    }
    # when two of them move
    await move(api, cids[0], "Active")
    await move(api, cids[1], "Churned", "price")
    # then the summary reflects it right away
    after = (await api.gql(SUMMARY))["data"]["lifecycleSummary"]
    assert [x["stage"] for x in after["stages"]] == DEFAULT_STAGES
    assert dict((x["stage"], x["count"]) for x in after["stages"]) == {
        "Prospect": 1,
        "Onboarded": 0,
        "Active": 1,
        "At-Risk": 0,
        "Churned": 1,
    }
    assert after["total"] == 3
