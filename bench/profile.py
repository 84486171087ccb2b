"""A py-spy profile of one worker under one scenario's load, run by hand:
`.venv/bin/python bench/profile.py S1|S2|S4|S4b [--seconds 15] [--py-spy PATH]`
(S1, S2: bench/peer.py's reads, 32 connections; S4: bench/run.py's single updates, 16;
S4b: its bulk updates, 100 changes a call, 4 in flight).

Writes the collapsed stacks to /tmp/c360-profile-<scenario>.txt and prints the functions with
the most inclusive and own time (a quick read; load the file in speedscope for the rest)."""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import secrets
import subprocess
import threading
from pathlib import Path

from common import (  # bench/common.py
    backend_args,
    bench_database,
    lua_strings,
    serving,
    user_tokens,
    wrk,
    wrk_script,
)
from peer import CONNECTIONS, S1, S2, TENANT, customer_ids
from run import BULK_LUA, UPDATE_LUA


def worker_pid(supervisor: int) -> int:
    out = subprocess.run(["pgrep", "-P", str(supervisor)], capture_output=True, text=True)
    children = [int(p) for p in out.stdout.split()]
    return children[-1] if children else supervisor


def summarise(path: Path, top: int = 40) -> None:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        total += n
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    print(f"{total} samples")
    print("--- inclusive")
    for frame, n in inclusive.most_common(top):
        print(f"{100 * n / total:5.1f}%  {frame}")
    print("--- own")
    for frame, n in own.most_common(top):
        print(f"{100 * n / total:5.1f}%  {frame}")


async def main() -> None:
    ap = argparse.ArgumentParser()
    backend_args(ap)
    ap.add_argument("scenario", choices=["S1", "S2", "S4", "S4b"])
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--py-spy", default="/tmp/tools/bin/py-spy")
    ap.add_argument("--customers", type=int, default=50_000)
    args = ap.parse_args()
    database = await bench_database(args.database, TENANT, args.customers)
    ids = await customer_ids(database, 2000)
    out = Path(f"/tmp/c360-profile-{args.scenario}.txt")
    async with serving(database, args.redis, raise_rate_limit=False) as (base, proc):
        if args.scenario == "S4":
            script = UPDATE_LUA.replace("@IDS@", lua_strings(ids)).replace(
                "@TOKENS@", lua_strings(user_tokens(TENANT))
            )
            connections = 16
        elif args.scenario == "S4b":
            script = BULK_LUA.replace("@IDS@", lua_strings(ids)).replace("@SIZE@", "100")
            # users named afresh: the hourly update budget of an earlier run does not count
            fresh = user_tokens(TENANT, prefix=f"profile-{secrets.token_hex(3)}")
            script = script.replace("@TOKENS@", lua_strings(fresh))
            connections = 4
        else:
            ours = {"S1": S1, "S2": S2}[args.scenario].ours
            script = wrk_script(ours, ids, user_tokens(TENANT))
            connections = CONNECTIONS
        wrk(f"{base}/graphql", script, connections, 3)  # warm-up
        pid = worker_pid(proc.pid)
        spy = subprocess.Popen(  # noqa: ASYNC220 - py-spy runs beside the load
            [
                args.py_spy,
                "record",
                "-p",
                str(pid),
                "-d",
                str(args.seconds),
                "-r",
                "200",
                "-f",
                "raw",
                "-o",
                str(out),
                *(["--native"] if os.environ.get("C360_PROFILE_NATIVE") else ["--nonblocking"]),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        result: list[object] = []
        t = threading.Thread(
            target=lambda: result.append(wrk(f"{base}/graphql", script, connections, args.seconds))
        )
        t.start()
        await asyncio.to_thread(t.join)
        spy.wait()
        print(result[0].line())  # type: ignore[attr-defined]
    summarise(out)


if __name__ == "__main__":
    asyncio.run(main())
