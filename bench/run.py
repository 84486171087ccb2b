"""Benchmarks, run by hand: `[C360_BENCH_REV=<commit>] .venv/bin/python bench/run.py` (figures go
to docs/BENCHMARKS.md; C360_BENCH_REV: the gateway of that commit, see bench/common.py).

Seeds a tenant of 50,000 customers in its own database, starts `c360 serve` in a subprocess,
and measures over real HTTP:
  1. lifecycleSummary latency, p50/p99 (seed spec bar: 500 ms), closed-loop (httpx, wrk),
  2. S3: lifecycleSummary at a fixed arrival rate (open model: sent on schedule whatever the
     server does, latency from the scheduled send, so queueing shows),
  3. S4: the rate of single updateLifecycleStage calls (seed spec bar: 100,000 in 5 minutes),
  4. S4b: bulk updateLifecycleStages, 100 changes per call, 4 calls in flight, until 100,000
     transitions; then the same calls from wrk for 12 s, counted by what the gateway
     committed (the Python client costs the shared box 13-19 us per change).
Writes are signed by `--users` users (200) of a name fresh for each run, so the production
update budget (1,000 per user and hour) holds and is never raised.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
from common import (  # bench/common.py
    BOX,
    SERVED,
    WRK_ERRORS_LUA,
    Who,
    backend_args,
    bench_database,
    cpu_split,
    graphql_body,
    lua_strings,
    open_loop_in_process,
    pct,
    serving,
    user_tokens,
    wrk,
    wrk_script,
)
from sqlalchemy import text

from customer360.data.db import make_engine
from customer360.data.scope import tenant_scope

TENANT = "bench"
SUMMARY = "{ lifecycleSummary { total stages { stage count } } }"


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


async def relay_counts(client: httpx.AsyncClient) -> Counter[str]:
    """The relay's drains and rows so far per sink (c360_outbox_drains_total, _rows_total)."""
    text_ = (await client.get("/metrics")).text
    found: Counter[str] = Counter()
    for m in re.finditer(r'^c360_outbox_(drains|rows)_total\{sink="(\w+)"\} (\S+)$', text_, re.M):
        found[f"{m.group(2)} {m.group(1)}"] += int(float(m.group(3)))
    return found


def batching(before: Counter[str], after: Counter[str]) -> str:
    """Rows per drain of each sink between two `relay_counts`: how the work after commit
    is shared by the changes of one wake."""
    out = []
    for sink in sorted({k.split()[0] for k in after}):
        drains = after[f"{sink} drains"] - before[f"{sink} drains"]
        rows = after[f"{sink} rows"] - before[f"{sink} rows"]
        out.append(f"{sink} {drains:,} drains, {rows / max(drains, 1):.1f} rows each")
    return "; ".join(out)


async def transactions(url: str) -> int:
    """Transactions the bench database has ended so far (pg_stat_database): per change,
    the write's own plus its share of the sealer's and the relay's."""
    engine = make_engine(url)
    try:
        async with engine.connect() as c:
            done = await c.execute(
                text(
                    "SELECT xact_commit + xact_rollback FROM pg_stat_database "
                    "WHERE datname = current_database()"
                )
            )
            return int(done.scalar_one())
    finally:
        await engine.dispose()


async def stages_of(url: str, ids: list) -> dict[object, str]:
    """Where each customer stands now, so that every bulk change is a real move."""
    engine = make_engine(url)
    async with engine.begin() as c:
        await tenant_scope(c, TENANT)
        rows = await c.execute(
            text("SELECT id, stage FROM customers WHERE tenant_id=:t AND id = ANY(:ids)"),
            {"t": TENANT, "ids": list(ids)},
        )
        out = {r[0]: r[1] for r in rows}
    await engine.dispose()
    return out


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
    client: httpx.AsyncClient, tokens: list[str], ids: list, n: int, conc: int
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
            headers = {"Authorization": f"Bearer {tokens[k % len(tokens)]}"}
            t = time.perf_counter()
            r = await client.post("/graphql", json={"query": doc, "variables": v}, headers=headers)
            times.append(time.perf_counter() - t)
            assert r.status_code == 200 and "errors" not in r.json(), r.text

    start = time.perf_counter()
    await asyncio.gather(*(one(k) for k in range(n)))
    return n / (time.perf_counter() - start), times


# Each pass over the ids moves them the other way, so nearly every call is a real move.
UPDATE_LUA = (
    """
math.randomseed(os.time())
ids = @IDS@
tokens = @TOKENS@
n = 0
request = function()
  n = n + 1
  local stage = (math.floor(n / #ids) % 2 == 0) and "Onboarded" or "Active"
  local body = '{"query":"mutation($i: UpdateLifecycleStageInput!) { updateLifecycleStage' ..
    '(input: $i) { success transition { id } } }","variables":{"i":{"customerId":"' ..
    ids[(n % #ids) + 1] .. '","stage":"' .. stage .. '"}}}'
  return wrk.format("POST", "/graphql", {["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. tokens[math.random(#tokens)]}, body)
end
"""
    + WRK_ERRORS_LUA
)

BULK = (
    "mutation($inputs: [UpdateLifecycleStageInput!]!) { updateLifecycleStages(inputs: $inputs) "
    "{ succeeded failed results { transition { id } error { code } } } }"
)
BULK_STAGES = ("Active", "Onboarded")

# S4b for wrk (bench/profile.py): call n takes the n-th slice of SIZE ids; each pass over
# the slices moves them the other way (after the first pass every change is a real move).
BULK_LUA = (
    """
ids = @IDS@
tokens = @TOKENS@
size = @SIZE@
chunks = math.floor(#ids / size)
n = 0
request = function()
  n = n + 1
  local k = n % chunks
  local stage = (math.floor(n / chunks) % 2 == 0) and "Onboarded" or "Active"
  local items = {}
  for j = 1, size do
    items[j] = '{"customerId":"' .. ids[k * size + j] .. '","stage":"' .. stage .. '"}'
  end
  local body = '{"query":"@QUERY@","variables":{"inputs":[' .. table.concat(items, ",") ..
    ']}}'
  return wrk.format("POST", "/graphql", {["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. tokens[(n % #tokens) + 1]}, body)
end
""".replace("@QUERY@", BULK)
    + WRK_ERRORS_LUA
)


@dataclass(slots=True)
class BulkResult:
    transitions: int = 0  # changes that moved a customer (not no-ops)
    succeeded: int = 0
    failed: int = 0
    calls: int = 0
    reached: float | None = None  # seconds until `target` transitions had committed
    seconds: float = 0.0
    times: list[float] = field(default_factory=list)  # per call
    codes: Counter[str] = field(default_factory=Counter)  # error codes of failed changes


async def bulk_updates(
    client: httpx.AsyncClient,
    tokens: list[str],
    ids: list,
    current: dict[object, str],
    target: int,
    size: int,
    in_flight: int,
) -> BulkResult:
    """`updateLifecycleStages` calls of `size` changes, `in_flight` at once, until `target`
    transitions. Calls in flight take consecutive slices of the ids, so they never wait on
    each other's customers; each is signed by the next user. Each pass over the ids moves
    every customer between the two BULK_STAGES, first away from its `current` stage."""
    chunks = len(ids) // size
    out = BulkResult()
    start = time.perf_counter()

    async def one(k: int) -> None:
        part = ids[(k % chunks) * size : (k % chunks + 1) * size]
        flip = (k // chunks) % 2
        inputs = [
            {"customerId": str(i), "stage": BULK_STAGES[(current.get(i) == BULK_STAGES[0]) ^ flip]}
            for i in part
        ]
        headers = {"Authorization": f"Bearer {tokens[k % len(tokens)]}"}
        t = time.perf_counter()
        r = await client.post(
            "/graphql", json={"query": BULK, "variables": {"inputs": inputs}}, headers=headers
        )
        out.times.append(time.perf_counter() - t)
        doc = r.json()
        assert r.status_code == 200 and "errors" not in doc, r.text
        res = doc["data"]["updateLifecycleStages"]
        out.calls += 1
        out.succeeded += res["succeeded"]
        out.failed += res["failed"]
        out.transitions += sum(1 for x in res["results"] if x["transition"])
        out.codes.update(x["error"]["code"] for x in res["results"] if x["error"])
        if out.reached is None and out.transitions >= target:
            out.reached = time.perf_counter() - start

    next_call = 0

    async def caller() -> None:
        nonlocal next_call
        # A run whose changes are refused (over budget, say) stops instead of spinning.
        while out.transitions < target and out.failed <= 10 * size:
            k, next_call = next_call, next_call + 1
            await one(k)

    await asyncio.gather(*(caller() for _ in range(in_flight)))
    out.seconds = time.perf_counter() - start
    return out


async def main() -> None:
    ap = argparse.ArgumentParser()
    backend_args(ap)
    ap.add_argument("--customers", type=int, default=50_000)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--updates", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1, help="c360 serve --workers")
    ap.add_argument("--users", type=int, default=200, help="users signing the writes")
    ap.add_argument("--s3-rate", type=float, default=1000, help="S3 arrivals per second")
    ap.add_argument("--s3-seconds", type=float, default=10)
    ap.add_argument("--s3-connections", type=int, default=64, help="kept-alive, fixed")
    ap.add_argument("--bulk-transitions", type=int, default=100_000)
    ap.add_argument("--bulk-size", type=int, default=100)
    ap.add_argument("--bulk-in-flight", type=int, default=4)
    ap.add_argument(
        "--writes-only", action="store_true", help="S4 (wrk) and S4b only, with CPU per change"
    )
    ap.add_argument("--bulk-only", action="store_true", help="S4b only, with CPU per change")
    args = ap.parse_args()
    args.writes_only = args.writes_only or args.bulk_only
    url, ids = await prepare(args.database, args.customers)
    # Users named afresh for each run: an earlier run's changes within the hour do not
    # count against this one's budget.
    tokens = user_tokens(TENANT, args.users, prefix=f"bench-{secrets.token_hex(3)}")
    print(f"c360 at {SERVED}, {args.workers} worker(s), {args.users} users")
    gateway = serving(url, args.redis, workers=args.workers, raise_rate_limit=False)
    async with (
        gateway as (base, proc),
        httpx.AsyncClient(
            base_url=base, timeout=30, limits=httpx.Limits(max_connections=64)
        ) as client,
    ):
        headers = {"Authorization": f"Bearer {tokens[0]}"}
        ms = lambda xs, p: f"{pct(xs, p) * 1000:.1f} ms"  # noqa: E731
        gql = f"{base}/graphql"
        conc = args.concurrency
        # CPU per change of the gateway, PostgreSQL and Redis (bench/peer.py's split), of this
        # process (S4b's load generator), and of the whole box, wrk included (it starts inside
        # the measured block, where a group by name would miss it): 10,000 changes/s on two
        # cores leave 200 us of "all" per change.
        groups: dict[str, Who] = {
            "gateway": proc.pid,
            "postgres": "postgres",
            "redis": "redis-server",
            "bench": (os.getpid(),),
            "all": BOX,
        }
        per = lambda spent, n: ", ".join(  # noqa: E731
            f"{k} {1e6 * v / max(n, 1):,.0f} us" for k, v in spent.items()
        )
        if not args.writes_only:
            await latency(client, headers, 200, 4)  # warm-up
            seq = await latency(client, headers, args.requests // 4, 1)
            par = await latency(client, headers, args.requests, args.concurrency)
            print(f"lifecycleSummary, 1 client:  p50 {ms(seq, 50)}  p99 {ms(seq, 99)}")
            print(
                f"lifecycleSummary, {args.concurrency} clients: "
                f"p50 {ms(par, 50)}  p99 {ms(par, 99)}"
                f"  ({args.requests / sum(par) * args.concurrency:.0f} req/s approx)"
            )
        if shutil.which("wrk") and not args.writes_only:
            summary = wrk_script(graphql_body(SUMMARY), tokens=tokens)
            r = await asyncio.to_thread(wrk, gql, summary, conc, 10)
            print(f"wrk, lifecycleSummary, {conc} connections: {r.line()}", flush=True)
        if not args.writes_only:
            s3 = await open_loop_in_process(
                gql,
                graphql_body(SUMMARY),
                tokens,
                args.s3_rate,
                args.s3_seconds,
                args.s3_connections,
            )
            print(
                f"S3 lifecycleSummary, open model, {args.s3_rate:,.0f}/s for "
                f"{args.s3_seconds:g} s: {s3.line()}",
                flush=True,
            )
        if shutil.which("wrk") and not args.bulk_only:
            script = UPDATE_LUA.replace("@IDS@", lua_strings([str(i) for i in ids[:5000]]))
            script = script.replace("@TOKENS@", lua_strings(tokens))
            relayed, ended = await relay_counts(client), await transactions(url)
            with cpu_split(groups) as spent:
                r = await asyncio.to_thread(wrk, gql, script, conc, 15)
            await asyncio.sleep(1)  # the last wakes drain
            ended = await transactions(url) - ended
            print(
                f"S4 wrk, updateLifecycleStage, {conc} connections: {r.line()}  "
                f"(100,000 would take {100_000 / r.rate:.0f} s)\n"
                f"  CPU per change: {per(spent, r.requests)}; "
                f"{ended / max(r.requests, 1):.2f} transactions\n"
                f"  relay: {batching(relayed, await relay_counts(client))}",
                flush=True,
            )
        if not args.writes_only:
            rate, times = await updates(client, tokens, ids, args.updates, args.concurrency)
            print(
                f"updateLifecycleStage, {args.concurrency} clients: {rate:.0f}/s "
                f"(100,000 would take {100_000 / rate:.0f} s)  p50 {ms(times, 50)}  "
                f"p99 {ms(times, 99)}  mean {statistics.mean(times) * 1000:.1f} ms",
                flush=True,
            )
        current = await stages_of(url, ids)
        relayed = await relay_counts(client)
        with cpu_split(groups) as spent:
            b = await bulk_updates(
                client,
                tokens,
                ids,
                current,
                args.bulk_transitions,
                args.bulk_size,
                args.bulk_in_flight,
            )
        reached = f"{b.reached:.1f} s" if b.reached is not None else "not reached"
        print(
            f"S4b updateLifecycleStages, {args.bulk_size} per call, {args.bulk_in_flight} in "
            f"flight: {b.transitions / b.seconds:,.0f} transitions/s, "
            f"{args.bulk_transitions:,} transitions in {reached}  "
            f"({b.calls} calls, {b.transitions:,} moved, {b.succeeded - b.transitions:,} no-op, "
            f"{b.failed} failed {dict(b.codes)})  per call p50 {ms(b.times, 50)}  "
            f"p99 {ms(b.times, 99)}\n  CPU per change: {per(spent, b.transitions)}\n"
            f"  relay: {batching(relayed, await relay_counts(client))}",
            flush=True,
        )
        if shutil.which("wrk"):
            await bulk_by_wrk(client, gql, ids, args, groups, per)


async def moved_so_far(client: httpx.AsyncClient) -> int:
    """Stage changes the gateway has committed (c360_lifecycle_transitions_total)."""
    text_ = (await client.get("/metrics")).text
    found = re.findall(r"^c360_lifecycle_transitions_total\{[^}]*\} (\S+)$", text_, re.M)
    return int(sum(float(n) for n in found))


async def bulk_by_wrk(
    client: httpx.AsyncClient,
    gql: str,
    ids: list,
    args: argparse.Namespace,
    groups: dict[str, Who],
    per: Any,
) -> None:
    """S4b again with wrk as the load generator (C, as for S1, S2 and S4), which takes less of
    the shared box than the Python client above (bench 13-19 us per change). The same
    calls: `bulk_size` changes each, `bulk_in_flight` connections, users of a fresh name.
    The rate counts what the gateway committed (its transitions counter): a first pass's
    no-ops and any failed change count for nothing."""
    seconds = 12
    script = BULK_LUA.replace("@IDS@", lua_strings([str(i) for i in ids]))
    script = script.replace("@SIZE@", str(args.bulk_size))
    fresh = user_tokens(TENANT, args.users, prefix=f"bench-wrk-{secrets.token_hex(3)}")
    script = script.replace("@TOKENS@", lua_strings(fresh))
    # Every customer to the stage the script's first pass leaves, so that pass moves them all.
    for k in range(0, len(ids) - len(ids) % args.bulk_size, args.bulk_size):
        inputs = [{"customerId": str(i), "stage": "Active"} for i in ids[k : k + args.bulk_size]]
        headers = {"Authorization": f"Bearer {fresh[k // args.bulk_size % len(fresh)]}"}
        body = {"query": BULK, "variables": {"inputs": inputs}}
        r = await client.post("/graphql", json=body, headers=headers)
        assert r.status_code == 200 and "errors" not in r.json(), r.text
    await asyncio.sleep(1)
    before, relayed = await moved_so_far(client), await relay_counts(client)
    with cpu_split(groups) as spent:
        w = await asyncio.to_thread(wrk, gql, script, args.bulk_in_flight, seconds)
    await asyncio.sleep(1)  # the calls in flight when wrk stopped commit
    moved = await moved_so_far(client) - before
    print(
        f"S4b by wrk, {args.bulk_size} per call, {args.bulk_in_flight} connections: "
        f"{moved / seconds:,.0f} transitions/s ({moved:,} committed in {seconds} s of "
        f"{w.requests:,} calls; errors {w.errors})  per call p50 {w.p50_ms:.1f} ms  "
        f"p99 {w.p99_ms:.1f} ms\n  CPU per change: {per(spent, moved)}\n"
        f"  relay: {batching(relayed, await relay_counts(client))}",
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main())
