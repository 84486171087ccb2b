"""Two commits of the gateway alternating in one run, by hand:

    .venv/bin/python bench/revs.py ef178ae HEAD [--seconds 8] [--rounds 3]

Each round serves each commit in turn (C360_BENCH_REV, bench/common.py: that commit's code
and its own bench database; one worker) and measures S1 and S2 of bench/peer.py, and S1 with
the id written into the document instead of a variable (2,000 distinct documents, as a
client that does not use variables sends them). Alternating keeps the box's drift out of the
comparison. Figures go to docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys

CHILD = "--measure"


async def measure(seconds: int) -> None:
    """In a child process pinned to one commit: one line of figures."""
    from common import (
        ID_SLOT,
        SERVED,
        backend_args,
        bench_database,
        graphql_body,
        serving,
        user_tokens,
    )
    from peer import S1, S2, TENANT, customer_ids
    from peer import measure as wrk_measure

    ap = argparse.ArgumentParser()
    backend_args(ap)
    args, _ = ap.parse_known_args()
    inline = graphql_body(
        f'{{ customer(id: "{ID_SLOT}") {{ name companyName tier '
        "lifecycle { stage enteredAt version } } }"
    )
    url = await bench_database(args.database, TENANT, 50_000)
    ids = await customer_ids(url, 2000)
    tokens = user_tokens(TENANT, 200)
    cells = [SERVED]
    async with serving(url, args.redis, raise_rate_limit=False) as (base, proc):
        for body in (S1.ours, inline, S2.ours):
            r, _ = await asyncio.to_thread(wrk_measure, base, body, ids, tokens, seconds, proc.pid)
            cells.append(f"{r.rate:,.0f}/s, p99 {r.p99_ms:.1f} ms, {r.errors} errors")
    print("| " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    if CHILD in sys.argv:
        asyncio.run(measure(int(sys.argv[sys.argv.index(CHILD) + 1])))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("revs", nargs=2, help="two commits, e.g. ef178ae HEAD")
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install -y wrk")
    print("| commit | S1 (id as a variable) | S1 (id in the document) | S2 50-row list |")
    print("|---|---|---|---|", flush=True)
    for _ in range(args.rounds):
        for rev in args.revs:
            env = {**os.environ, "C360_BENCH_REV": rev}
            subprocess.run(
                [sys.executable, __file__, CHILD, str(args.seconds)], env=env, check=True
            )


if __name__ == "__main__":
    main()
