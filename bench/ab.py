"""The compiled query path against strawberry alone, side by side in one run, by hand:

    C360_BENCH_REV=HEAD .venv/bin/python bench/ab.py [--seconds 8] [--rounds 2]

For each round, `c360 serve` (1 worker) is started with C360_GRAPHQL_COMPILED=off, then =on,
and S1 (one customer) and S2 (a 50-row page) of bench/peer.py are measured as peer.py measures
them (wrk, 32 connections, after a 3 s warm-up). Alternating the two in rounds keeps the
box's drift (it is shared) out of the ratio. Figures go to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil

from common import backend_args, bench_database, serving, user_tokens  # bench/common.py
from peer import S1, S2, TENANT, customer_ids, measure  # bench/peer.py: the same harness


async def main() -> None:
    ap = argparse.ArgumentParser()
    backend_args(ap)
    ap.add_argument("--customers", type=int, default=50_000)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    url = await bench_database(args.database, TENANT, args.customers)
    ids = await customer_ids(url, 2000)
    tokens = user_tokens(TENANT, 200)
    rows: list[str] = []
    for round_ in range(1, args.rounds + 1):
        for mode in ("off", "on"):
            os.environ["C360_GRAPHQL_COMPILED"] = mode  # `serving` hands its environment on
            async with serving(url, args.redis, raise_rate_limit=False) as (base, proc):
                for sc in (S1, S2):
                    r, _ = await asyncio.to_thread(
                        measure, base, sc.ours, ids, tokens, args.seconds, proc.pid
                    )
                    line = f"| {round_} | {sc.name} | {mode} | {r.rate:,.0f}/s | "
                    line += f"{r.p50_ms:.1f} ms | {r.p99_ms:.1f} ms | {r.errors} |"
                    print(line, flush=True)
                    rows.append(line)
    print("\n| round | scenario | compiled | rate | p50 | p99 | errors |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    asyncio.run(main())
