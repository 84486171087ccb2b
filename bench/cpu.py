"""The worker's CPU per answered request under S1 (or S2, S4), two commits alternating, by hand:

    .venv/bin/python bench/cpu.py 4b7463b HEAD [--seconds 10] [--rounds 3] [--scenario S4]

On the shared box the rate (bench/revs.py) moves with whatever else runs; the CPU seconds the
worker itself spent per request (from /proc) move much less, so a change to the per-request
pipeline shows here when the rate cannot resolve it."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import subprocess
import sys

CHILD = "--measure"


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_pid(supervisor: int) -> int:
    out = subprocess.run(["pgrep", "-P", str(supervisor)], capture_output=True, text=True)
    children = [int(p) for p in out.stdout.split()]
    return children[-1] if children else supervisor


async def measure(seconds: int, scenario: str) -> None:
    from common import (
        SERVED,
        backend_args,
        bench_database,
        lua_strings,
        serving,
        user_tokens,
        wrk,
        wrk_script,
    )
    from peer import CONNECTIONS, S1, S2, TENANT, customer_ids
    from run import UPDATE_LUA

    ap = argparse.ArgumentParser()
    backend_args(ap)
    args, _ = ap.parse_known_args()
    url = await bench_database(args.database, TENANT, 50_000)
    ids = await customer_ids(url, 2000)
    # S4's writers are named afresh: earlier runs' changes do not count against this hour.
    fresh = {"prefix": f"cpu-{secrets.token_hex(3)}"} if scenario == "S4" else {}
    tokens = user_tokens(TENANT, 200, **fresh)
    async with serving(url, args.redis, raise_rate_limit=False) as (base, proc):
        if scenario == "S4":  # bench/run.py's single updates, 16 connections
            script = UPDATE_LUA.replace("@IDS@", lua_strings(ids))
            script, connections = script.replace("@TOKENS@", lua_strings(tokens)), 16
        else:
            body = {"S1": S1, "S2": S2}[scenario].ours
            script, connections = wrk_script(body, ids, tokens), CONNECTIONS
        wrk(f"{base}/graphql", script, connections, 3)  # warm-up
        pid = worker_pid(proc.pid)
        before = cpu_seconds(pid)
        r = wrk(f"{base}/graphql", script, connections, seconds)
        used = cpu_seconds(pid) - before
        batches = _batch_sizes(base)
    print(
        f"{SERVED} {scenario} {r.rate:,.0f}/s  worker CPU {used / r.requests * 1e6:.0f} us/request "
        f"({used / seconds:.0%} of a core)  errors {r.errors}{batches}",
        flush=True,
    )


def _batch_sizes(base: str) -> str:
    """Requests per write transaction since the start (customer360.batching), when the
    commit measured has them."""
    import httpx

    text = httpx.get(f"{base}/metrics").text
    found = dict(re.findall(r"^c360_write_batch_requests_(sum|count) (\S+)$", text, re.M))
    if "count" not in found or not float(found["count"]):
        return ""
    return f"  requests per write transaction {float(found['sum']) / float(found['count']):.2f}"


def main() -> None:
    if CHILD in sys.argv:
        at = sys.argv.index(CHILD)
        asyncio.run(measure(int(sys.argv[at + 1]), sys.argv[at + 2]))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("revs", nargs=2)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scenario", choices=("S1", "S2", "S4"), default="S1")
    args = ap.parse_args()
    for _ in range(args.rounds):
        for rev in args.revs:
            env = {**os.environ, "C360_BENCH_REV": rev}
            subprocess.run(
                [sys.executable, __file__, CHILD, str(args.seconds), args.scenario],
                env=env,
                check=True,
            )


if __name__ == "__main__":
    main()
