"""Instructions the gateway executes per answer, counted by valgrind, by hand:

    .venv/bin/python bench/instructions.py [--requests 100] [--scenario S1 S2]

The shared box moves a rate by 10-30% from one minute to the next, which hides any one step
of a few percent. Instructions do not move: `c360 serve` (one worker) runs under callgrind
with counting off, the scenario's request is sent once for each of `--ids` customers and a
while more, to warm every cache (as a wrk run of bench/peer.py does within its first second),
then counting is turned on for `--requests` more, sent one at a time (bench/peer.py's
bodies, ids drawn from the same customers, 200 users), and off again. Repeatable to about
2% run to run; the whole request is counted (HTTP parsing, middleware, the compiled path,
the driver, the response). Instructions are not time: a cache-unfriendly step can cost more
than it counts.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import subprocess
import tempfile
from pathlib import Path

import httpx
from common import ID_SLOT, SERVED, backend_args, bench_database, serving, user_tokens
from peer import S1, S2, TENANT, customer_ids

SCENARIOS = {"S1": S1, "S2": S2}


def control(pid: int, switch: str) -> None:
    """callgrind_control talks to the valgrind of `pid` (the server's python)."""
    subprocess.run(["callgrind_control", "-i", switch, str(pid)], capture_output=True, check=True)


async def send(base: str, body: str, ids: list[str], tokens: list[str], n: int) -> None:
    """`n` requests, the first len(ids) with each id once, the rest with ids drawn at random."""
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        for i in range(n):
            r = await client.post(
                "/graphql",
                content=body.replace(ID_SLOT, ids[i] if i < len(ids) else random.choice(ids)),
                headers={
                    "authorization": f"Bearer {random.choice(tokens)}",
                    "content-type": "application/json",
                },
            )
            if r.status_code != 200 or b'"errors"' in r.content:
                raise RuntimeError(f"{r.status_code}: {r.text[:300]}")


async def count(args: argparse.Namespace, scenario: str) -> int:
    url = await bench_database(args.database, TENANT, 50_000)
    ids = await customer_ids(url, args.ids)
    tokens = user_tokens(TENANT)
    body = SCENARIOS[scenario].ours
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "valgrind.log"
        valgrind = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={Path(tmp) / 'callgrind.out'}",
            f"--log-file={log}",
        ]
        gateway = serving(
            url, args.redis, raise_rate_limit=False, under=valgrind, ready_seconds=300
        )
        async with gateway as (base, proc):
            await send(base, body, ids, tokens, len(ids) + args.warm_up)
            control(proc.pid, "on")
            await send(base, body, ids, tokens, args.requests)
            control(proc.pid, "off")
            proc.terminate()  # callgrind writes its counts as the server exits
            await asyncio.to_thread(proc.wait, 300)
        found = re.search(r"Collected : (\d+)", log.read_text())
        if found is None:
            raise RuntimeError("no instruction count from callgrind")
        return int(found.group(1))


async def main() -> None:
    ap = argparse.ArgumentParser()
    backend_args(ap)
    ap.add_argument("--scenario", nargs="+", choices=sorted(SCENARIOS), default=["S1", "S2"])
    ap.add_argument("--requests", type=int, default=100)
    ap.add_argument("--warm-up", type=int, default=60)
    ap.add_argument("--ids", type=int, default=200)
    args = ap.parse_args()
    for scenario in args.scenario:
        total = await count(args, scenario)
        print(
            f"{SERVED} {scenario}: {total / args.requests:,.0f} instructions an answer", flush=True
        )


if __name__ == "__main__":
    asyncio.run(main())
