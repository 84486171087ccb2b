"""The clients front-end engineers use (Apollo Client, urql, graphql-ws), in Node, against the
gateway over real HTTP and WebSocket. Their packages are locked in tests/clients."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from typing import Any

import httpx

from customer360.lifecycle import ChangeStage
from tests.conftest import make_token
from tests.helpers import CLIENTS, run_node, unpublished


async def test_apollo_and_urql_caches_stay_right_through_the_readme_flows(
    node_clients, server, api, make_customer
) -> None:
    # given a customer in Prospect, and an account manager and an admin of its tenant
    cid = await make_customer()
    env = {
        "C360_URL": server.url,
        "TOKEN": make_token("am-1", api.tenant, ("ROLE_ACCOUNT_MANAGER",)),
        "ADMIN_TOKEN": make_token("admin-1", api.tenant, ("ROLE_TENANT_ADMIN",)),
        "CUSTOMER": str(cid),
    }
    # when each client watches it, moves it with the README's payload, and saves a config
    out = await run_node("cache_identity.mjs", env)
    # then neither warns (no "Cache data may be lost", no missing keys)
    assert out["warnings"] == []
    # and what Apollo's watcher shows last is the new stage with ITS allowed next stages
    apollo = out["apollo"]
    first, last = apollo["lifecycles"][0], apollo["lifecycles"][-1]
    assert first["stage"] == "Prospect" and "Prospect" not in first["allowedNextStages"]
    assert last["stage"] == "Onboarded" and last["version"] == 2
    assert sorted(last["allowedNextStages"]) == ["Active", "At-Risk", "Churned", "Prospect"]
    # and the saved configuration replaced the cached one without another request
    assert [c["version"] for c in apollo["configs"]] == [0, 1]
    assert apollo["configs"][-1]["stages"][-1] == "Dormant"
    assert apollo["configRequests"] == 1  # the mutation alone
    # and urql's graphcache alike
    urql = out["urql"]
    assert urql["lifecycles"][-1]["stage"] == "Active"
    assert "Active" not in urql["lifecycles"][-1]["allowedNextStages"]
    assert urql["configs"][-1]["stages"][-2:] == ["Dormant", "Paused"]


class Lines:
    """A Node process's JSON lines, read as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc, self.seen = proc, []

    async def until(self, wanted: Any, timeout: float = 20) -> None:
        async def read() -> None:
            while not any(wanted(x) for x in self.seen):
                assert self.proc.stdout is not None
                line = await self.proc.stdout.readline()
                assert line, "the client ended early"
                self.seen.append(json.loads(line))

        await asyncio.wait_for(read(), timeout)

    def changes(self) -> list[str]:
        return [x["change"]["id"] for x in self.seen if "change" in x]


async def test_a_live_list_on_graphql_ws_resumes_exactly_after_a_failure_and_a_restart(
    node_clients, settings, engine, api, make_customer, monkeypatch
) -> None:
    import strawberry

    from customer360.app import create_app
    from customer360.devstack import free_port
    from customer360.lifecycle import ChangeResult, Source
    from tests.conftest import run_server
    from tests.helpers import use_cases
    from tests.live.test_live import settled

    cid = await make_customer()
    # its creation gone out before the client subscribes: else it may arrive as a change
    await settled(engine, api.tenant)
    plain = settings.model_copy(update={"kafka_bootstrap": "off"})
    port = free_port()
    # given the first execution of any subscription group fails inside the server
    stream, failures = strawberry.Schema.stream, [RuntimeError("group source failed")]

    async def flaky(self: Any, *args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return await stream(self, *args, **kwargs)

    monkeypatch.setattr(strawberry.Schema, "stream", flaky)
    token = make_token("am-1", api.tenant, ("ROLE_ACCOUNT_MANAGER",))
    expected: list[str] = []

    async def move(stage: str) -> None:
        resp = await api.patch(cid, {"stage": stage})
        assert resp.status_code == 200, resp.text

    async with run_server(create_app(plain), port) as url:
        proc = await asyncio.create_subprocess_exec(
            "node",
            "live_resume.mjs",
            cwd=CLIENTS,
            env={**os.environ, "C360_URL": url, "TOKEN": token, "CUSTOMER": str(cid)},
            stdout=subprocess.PIPE,
        )
        lines = Lines(proc)
        try:
            # when the live list's group fails, the socket closes with 1013, and the client
            # reconnects and subscribes again
            await lines.until(lambda x: x.get("connected") == 2)
            assert {"closed": 1013} in lines.seen
            await asyncio.sleep(1.0)  # its subscription is in place
            api_http = api.http
            api.http = httpx.AsyncClient(base_url=url)
            try:
                for stage in ("Onboarded", "Active"):
                    await move(stage)
            finally:
                await api.http.aclose()
                api.http = api_http
            await lines.until(lambda x: len(lines.changes()) == 2)
            # and the gateway restarts: uvicorn closes the socket with 1012 ...
        except BaseException:
            proc.kill()
            raise
    try:
        await lines.until(lambda x: x.get("closed") == 1012)
        # ... while changes commit (another gateway, an event) ...
        usecases = use_cases(engine)
        for stage in ("At-Risk", "Onboarded"):
            cmd = ChangeStage(api.tenant, cid, stage, "crm", Source.EVENT_LISTENER, "Renewal")
            (outcome,) = (await usecases.update_stages([cmd])).outcomes
            assert isinstance(outcome, ChangeResult) and outcome.transition is not None
            expected.append(str(outcome.transition.id))
        async with run_server(create_app(plain), port) as url:
            # then the client reconnects, resumes from its last cursor, and misses nothing
            await lines.until(lambda x: x.get("connected") == 3, timeout=30)
            await lines.until(lambda x: len(lines.changes()) == 4)
            async with httpx.AsyncClient(base_url=url) as http:
                resp = await http.patch(
                    f"/api/v1/customers/{cid}/lifecycle",
                    json={"stage": "Churned", "reason_code": "Price"},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert resp.status_code == 200, resp.text
            await lines.until(lambda x: len(lines.changes()) == 5)
            await asyncio.sleep(0.5)  # and nothing twice
    finally:
        proc.kill()
        await proc.wait()
    changes = lines.changes()
    assert len(changes) == len(set(changes)) == 5, lines.seen
    assert changes[2:4] == expected, lines.seen
    tos = [x["change"]["to"] for x in lines.seen if "change" in x]
    assert tos == ["Onboarded", "Active", "At-Risk", "Onboarded", "Churned"]


async def published(engine: Any, tenant: str, within: float = 15.0) -> None:
    """Until the relay has published every change of `tenant` to Redis (live subscribers):
    a subscription opened after this sees none of them."""
    async with asyncio.timeout(within):
        while await unpublished(engine, "redis_published_at", tenant):
            await asyncio.sleep(0.05)


async def test_the_readme_client_setups_query_page_mutate_and_subscribe(
    node_clients, server, api, make_customer, engine
) -> None:
    # given two customers, one in Prospect, their creation published before anyone listens
    # (a loaded box's relay can take longer than the clients' half a second of settling)
    cid = await make_customer()
    await make_customer()
    await published(engine, api.tenant)
    env = {
        "C360_URL": server.url,
        "TOKEN": make_token("am-1", api.tenant, ("ROLE_ACCOUNT_MANAGER",)),
        "CUSTOMER": str(cid),
    }
    # when the README's Apollo Client and urql setups are used as written
    out = await run_node("readme_clients.mjs", env)
    # then both page through the list, mutate, and see their change live
    assert out["apollo"] == {"pages": 2, "live": ["Onboarded"]}
    assert out["urql"] == {"pages": 2, "live": ["Active"], "error": None}


def test_the_readme_quotes_the_client_examples_verbatim() -> None:
    readme = (CLIENTS.parents[1] / "README.md").read_text()
    for example in sorted((CLIENTS / "examples").glob("*.mjs")):
        assert example.read_text().strip() in readme, f"README does not quote {example.name}"


async def test_graphiql_waits_for_a_token_then_fetches_the_schema_and_keeps_it_out_of_local_storage(
    node_clients, server, api
) -> None:
    token = make_token("dev-1", api.tenant, ("ROLE_ACCOUNT_MANAGER",))
    # when a developer opens GraphiQL, pastes a token and runs the default query
    out = await run_node("graphiql.mjs", {"C360_URL": server.url, "TOKEN": token}, timeout=90)
    # then nothing was sent with the placeholder: no 401, nothing in the console
    assert out["sentBeforeToken"] == 0
    assert all(status != 401 for _, status in out["statuses"]), out["statuses"]
    assert out["consoleErrors"] == []
    # and the schema was fetched again with the token, without a click on Re-fetch
    assert {"auth": f"Bearer {token}", "introspection": True} in out["sent"]
    assert all(s["auth"] == f"Bearer {token}" for s in out["sent"])
    assert out["result"]["data"]["viewer"]["subject"] == "dev-1"
    # and the token lives in this tab's sessionStorage only, never in localStorage
    assert token not in out["localStorage"]
    assert token in out["sessionStorage"]
    # and the page has its icon
    assert out["favicon"] == 200 and out["iconLink"].endswith("/graphiql-static/favicon.svg")
