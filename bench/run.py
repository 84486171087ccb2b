"""Benchmarks, run by hand: `.venv/bin/python bench/run.py` (figures go to docs/BENCHMARKS.md).

Seeds a tenant of 50,000 customers in its own database, starts `c360 serve` in a subprocess,
and measures over real HTTP:
  1. lifecycleSummary latency, p50/p99 (seed spec bar: 500 ms),
  2. the rate of single updateLifecycleStage calls (seed spec bar: 100,000 in 5 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import subprocess
import tempfile
import time

import httpx
from common import backend_args, bench_database, pct, serving, token  # bench/common.py
from sqlalchemy import text

from customer360.data.db import make_engine
from customer360.data.scope import tenant_scope

TENANT = "bench"


async def prepare(server_url: str, customers: int) -> tuple[str, list[object]]:
    url = await bench_database(server_url, TENANT, customers)
    engine = make_engine(url)
    async with engine.begin() as c:
        await tenant_scope(c, TENANT)  # row-level security applies to a non-superuser owner
        rows = await c.execute(
            text("SELECT id FROM customers WHERE tenant_id=:t ORDER BY id LIMIT 20000"),
            {"t": TENANT},
        )
        ids = [r[0] for r in rows]
    await engine.dispose()
    return url, ids


async def latency(
    client: httpx.AsyncClient, headers: dict[str, str], n: int, conc: int
) -> list[float]:
    body = {"query": "{ lifecycleSummary { total stages { stage count } } }"}
    times: list[float] = []
    sem = asyncio.Semaphore(conc)

    async def one() -> None:
        async with sem:
            t = time.perf_counter()
            r = await client.post("/graphql", json=body, headers=headers)
            times.append(time.perf_counter() - t)
            assert r.status_code == 200 and "errors" not in r.json(), r.text

    await asyncio.gather(*(one() for _ in range(n)))
    return times


async def updates(
    client: httpx.AsyncClient, headers: dict[str, str], ids: list, n: int, conc: int
) -> tuple[float, list[float]]:
    doc = (
        "mutation($i: UpdateLifecycleStageInput!) { updateLifecycleStage(input: $i) "
        "{ success transition { id } } }"
    )
    stages = ["Onboarded", "Active"]
    times: list[float] = []
    sem = asyncio.Semaphore(conc)

    async def one(k: int) -> None:
        async with sem:
            v = {"i": {"customerId": str(ids[k % len(ids)]), "stage": stages[(k // len(ids)) % 2]}}
            t = time.perf_counter()
            r = await client.post("/graphql", json={"query": doc, "variables": v}, headers=headers)
            times.append(time.perf_counter() - t)
            assert r.status_code == 200 and "errors" not in r.json(), r.text

    start = time.perf_counter()
    await asyncio.gather(*(one(k) for k in range(n)))
    return n / (time.perf_counter() - start), times


SUMMARY_LUA = """
wrk.method = "POST"
wrk.body = '{"query":"{ lifecycleSummary { total stages { stage count } } }"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(token)s"
"""
UPDATE_LUA = """
ids = {%(ids)s}
n = 0
request = function()
  n = n + 1
  local stage = (math.floor(n / #ids) %% 2 == 0) and "Onboarded" or "Active"
  local body = '{"query":"mutation($i: UpdateLifecycleStageInput!) { updateLifecycleStage' ..
    '(input: $i) { success transition { id } } }","variables":{"i":{"customerId":"' ..
    ids[(n %% #ids) + 1] .. '","stage":"' .. stage .. '"}}}'
  return wrk.format("POST", "/graphql", {["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer %(token)s"}, body)
end
response = function(status, headers, body)
  if status ~= 200 or string.find(body, '"errors"') then errors = (errors or 0) + 1 end
end
"""


def run_wrk(url: str, script: str, conc: int, seconds: int) -> str:
    """wrk (C, from Debian's wrk package) keeps the load generator off the server's CPU."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conc}", f"-d{seconds}s", "--latency", "-s", f.name, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"50%\s+(\S+)", out)
    p99 = re.search(r"99%\s+(\S+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return (
        f"{float(rate.group(1)) if rate else 0:.0f}/s  p50 {p50.group(1) if p50 else '?'}"
        f"  p99 {p99.group(1) if p99 else '?'}  non-2xx {non2xx.group(1) if non2xx else 0}"
    )


async def main() -> None:
    ap = argparse.ArgumentParser()
    backend_args(ap)
    ap.add_argument("--customers", type=int, default=50_000)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--updates", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1, help="c360 serve --workers")
    args = ap.parse_args()
    url, ids = await prepare(args.database, args.customers)
    async with (
        serving(url, args.redis, workers=args.workers) as (base, _),
        httpx.AsyncClient(
            base_url=base, timeout=30, limits=httpx.Limits(max_connections=64)
        ) as client,
    ):
        tok = token(TENANT)
        headers = {"Authorization": f"Bearer {tok}"}
        await latency(client, headers, 200, 4)  # warm-up
        seq = await latency(client, headers, args.requests // 4, 1)
        par = await latency(client, headers, args.requests, args.concurrency)
        ms = lambda xs, p: f"{pct(xs, p) * 1000:.1f} ms"  # noqa: E731
        print(f"lifecycleSummary, 1 client:  p50 {ms(seq, 50)}  p99 {ms(seq, 99)}")
        print(
            f"lifecycleSummary, {args.concurrency} clients: "
            f"p50 {ms(par, 50)}  p99 {ms(par, 99)}"
            f"  ({args.requests / sum(par) * args.concurrency:.0f} req/s approx)"
        )
        if shutil.which("wrk"):
            gql = f"{base}/graphql"
            conc = args.concurrency
            print(
                f"wrk, lifecycleSummary, {conc} connections: "
                + run_wrk(gql, SUMMARY_LUA % {"token": tok}, conc, 10)
            )
            id_list = ",".join(f'"{i}"' for i in ids[:5000])
            print(
                f"wrk, updateLifecycleStage, {conc} connections: "
                + run_wrk(gql, UPDATE_LUA % {"token": tok, "ids": id_list}, conc, 15)
            )
        rate, times = await updates(client, headers, ids, args.updates, args.concurrency)
        print(
            f"updateLifecycleStage, {args.concurrency} clients: {rate:.0f}/s "
            f"(100,000 would take {100_000 / rate:.0f} s)  p50 {ms(times, 50)}  "
            f"p99 {ms(times, 99)}  mean {statistics.mean(times) * 1000:.1f} ms"
        )


if __name__ == "__main__":
    asyncio.run(main())
