"""Schemathesis, a fuzzer nobody here wrote, against the session's real gateway.

/openapi.json: no 5xx; statuses, content types, headers and bodies as documented; invalid
requests refused; auth not ignored. /graphql: no 5xx and no INTERNAL_SERVER_ERROR. The same
commands as `scripts/audit.py`, with fewer examples so the module stays well under a minute.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from scripts.audit import hooks_env, known_values, schemathesis_command, write_config
from tests.conftest import Server, make_token

pytestmark = pytest.mark.slow

SUB = "st-fuzzer"


async def schemathesis(location: str, token: str, config: Path, max_examples: int) -> str:
    """Runs the CLI as a subprocess (the server shares this event loop, so it must not block)."""
    proc = await asyncio.create_subprocess_exec(
        *schemathesis_command(location, token, config, max_examples=max_examples),
        env=hooks_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text
    return text


@pytest.fixture
async def fuzz_config(server: Server, tenant: str, make_customer: Any, tmp_path: Path) -> Path:
    for _ in range(3):
        await make_customer()
    token = make_token(SUB, tenant, ("ROLE_TENANT_ADMIN",))
    values = await asyncio.to_thread(known_values, server.url, token)
    assert len(values["customers"]) == 3
    return write_config(tmp_path, values)


async def test_openapi_and_graphql_hold_under_fuzzing(
    server: Server, tenant: str, fuzz_config: Path
) -> None:
    token = make_token(SUB, tenant, ("ROLE_TENANT_ADMIN",))
    # Both at once: each CLI spends most of its time in its own process, not in the server.
    rest, graphql = await asyncio.gather(
        schemathesis(f"{server.url}/openapi.json", token, fuzz_config, 30),
        schemathesis(f"{server.url}/graphql", token, fuzz_config, 25),
    )
    # A run that tested nothing passes too: make sure every operation was reached.
    for out in (rest, graphql):
        selected = re.search(r"Operations: +(\d+) selected / \1 total", out)
        assert selected and re.search(rf"Tested: +{selected[1]}\b", out), out
        assert re.search(r"\d+ generated, \d+ passed", out), out


URL = "/api/v1/customers/{}/lifecycle"


async def test_a_405_on_the_shim_lists_every_method_it_has(
    http: httpx.AsyncClient, tenant: str, make_customer: Any
) -> None:
    # Found by schemathesis (allow_header_conformance): a route per method made Allow: PATCH.
    cid = await make_customer()
    resp = await http.delete(
        URL.format(cid), headers={"Authorization": f"Bearer {make_token(SUB, tenant)}"}
    )
    assert resp.status_code == 405
    allowed = {m.strip() for m in resp.headers["allow"].split(",")}
    assert {"GET", "PATCH"} <= allowed


async def test_the_documented_if_match_format_is_the_accepted_one(
    http: httpx.AsyncClient, tenant: str, make_customer: Any
) -> None:
    spec = (await http.get("/openapi.json")).json()
    params = spec["paths"]["/api/v1/customers/{id}/lifecycle"]["patch"]["parameters"]
    pattern = next(p for p in params if p["name"] == "If-Match")["schema"]["pattern"]
    cid = await make_customer()
    headers = {"Authorization": f"Bearer {make_token(SUB, tenant)}"}
    for value in ('"1"', 'W/"1"', "1", '"1', '"1234567890"', '"x"'):
        resp = await http.patch(
            URL.format(cid), json={"stage": "Prospect"}, headers={**headers, "If-Match": value}
        )
        documented = re.search(pattern, value) is not None
        assert (resp.status_code != 400) == documented, (value, resp.text)
