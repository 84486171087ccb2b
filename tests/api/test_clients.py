"""The clients front-end engineers use (Apollo Client, urql, graphql-ws), in Node, against the
gateway over real HTTP and WebSocket. Their packages are locked in tests/clients."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_token

CLIENTS = Path(__file__).resolve().parents[1] / "clients"


@pytest.fixture(scope="session")
def node_clients() -> Path:
    """tests/clients with its locked packages installed (`npm ci`, once per lock)."""
    node = shutil.which("node")
    assert node, "Node.js is needed for the client tests"
    stamp = CLIENTS / "node_modules" / ".installed-lock"
    lock = (CLIENTS / "package-lock.json").read_text()
    if not stamp.exists() or stamp.read_text() != lock:
        subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=CLIENTS,
            check=True,
            timeout=600,
        )
        stamp.write_text(lock)
    return CLIENTS


async def run_node(script: str, env: dict[str, str], timeout: float = 60) -> dict[str, Any]:
    """Runs a script of tests/clients (development builds, so the libraries warn as they do
    in a developer's browser); returns the JSON object it prints last."""
    proc = await asyncio.create_subprocess_exec(
        "node",
        "--conditions=development",
        script,
        cwd=CLIENTS,
        env={**os.environ, "NODE_ENV": "development", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode == 0, err.decode()[-3000:]
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


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
