"""Instructions the gateway executes per answer, counted by valgrind, by hand:

    .venv/bin/python bench/instructions.py [--requests 100] [--scenario S1 S2 S4]

The shared box moves a rate by 10-30% from one minute to the next, which hides any one step
of a few percent. Instructions do not move: `c360 serve` (one worker) runs under callgrind
with counting off, the scenario's request is sent once for each of `--ids` customers and a
while more, to warm every cache (as a wrk run of bench/peer.py does within its first second),
then counting is turned on for `--requests` more, sent one at a time (bench/peer.py's
bodies, ids drawn from the same customers, 200 users), and off again. Repeatable to about
2% run to run; the whole request is counted (HTTP parsing, middleware, the compiled path,
the driver, the response). Instructions are not time: a cache-unfriendly step can cost more
than it counts.

S4 is bench/run.py's single update, each request moving its customer away from where it
stands. Counting stays on for `SETTLE_SECONDS` after the last write, until the work after
commit (the sealer, the relay, the cache) is done, so a write's whole cost is counted; the
same seconds counted idle beforehand (timers, polls) are taken off. That work is paid one
write at a time here; under load the writes of one wake share it, so this overstates it.
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
from common import ID_SLOT, SERVED, backend_args, bench_database, graphql_body, serving, user_tokens
from peer import S1, S2, TENANT, customer_ids
from run import stages_of

UPDATE = graphql_body(
    "mutation($i: UpdateLifecycleStageInput!) { updateLifecycleStage(input: $i) "
    "{ success transition { id } } }",
    {"i": {"customerId": ID_SLOT, "stage": "@@STAGE@@"}},
)
SCENARIOS = {"S1": S1.ours, "S2": S2.ours, "S4": UPDATE}
SETTLE_SECONDS = 20  # for S4: the sealer, relay and cache under valgrind's slowness


def control(pid: int, *switch: str) -> None:
    """callgrind_control talks to the valgrind of `pid` (the server's python)."""
    subprocess.run(["callgrind_control", *switch, str(pid)], capture_output=True, check=True)


async def idle(pid: int, out: Path) -> int:
    """Instructions of SETTLE_SECONDS with no request, dumped apart from the rest."""
    control(pid, "-i", "on")
    await asyncio.sleep(SETTLE_SECONDS)
    control(pid, "-i", "off")
    before = set(out.parent.glob(f"{out.name}*"))
    control(pid, "-d")
    (dump,) = set(out.parent.glob(f"{out.name}*")) - before
    found = re.search(r"^summary: (\d+)", dump.read_text(), re.M)
    if found is None:
        raise RuntimeError(f"no summary in {dump}")
    return int(found.group(1))


async def send(
    base: str, body: str, ids: list[str], tokens: list[str], n: int, stages: dict[str, str]
) -> None:
    """`n` requests, the first len(ids) with each id once, the rest with ids drawn at random;
    a write moves its customer to the other of two stages (`stages` keeps where each is)."""
    async with httpx.AsyncClient(base_url=base, timeout=120) as client:
        for i in range(n):
            cid = ids[i] if i < len(ids) else random.choice(ids)
            stage = stages[cid] = "Active" if stages.get(cid) == "Onboarded" else "Onboarded"
            r = await client.post(
                "/graphql",
                content=body.replace(ID_SLOT, cid).replace("@@STAGE@@", stage),
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
    body = SCENARIOS[scenario]
    stages = {str(k): v for k, v in (await stages_of(url, ids)).items()}
    with tempfile.TemporaryDirectory() as tmp:
        log, out = Path(tmp) / "valgrind.log", Path(tmp) / "callgrind.out"
        valgrind = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            f"--log-file={log}",
        ]
        gateway = serving(
            url, args.redis, raise_rate_limit=False, under=valgrind, ready_seconds=300
        )
        async with gateway as (base, proc):
            await send(base, body, ids, tokens, len(ids) + args.warm_up, stages)
            quiet = 0
            if body is UPDATE:
                await asyncio.sleep(SETTLE_SECONDS)
                quiet = await idle(proc.pid, out)
            control(proc.pid, "-i", "on")
            await send(base, body, ids, tokens, args.requests, stages)
            if body is UPDATE:
                await asyncio.sleep(SETTLE_SECONDS)
            control(proc.pid, "-i", "off")
            proc.terminate()  # callgrind writes its counts as the server exits
            await asyncio.to_thread(proc.wait, 300)
        found = re.search(r"Collected : (\d+)", log.read_text())
        if found is None:
            raise RuntimeError("no instruction count from callgrind")
        return int(found.group(1)) - 2 * quiet


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
