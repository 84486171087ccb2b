"""Live delivery benchmark, run by hand: `.venv/bin/python bench/live.py [--sockets 1000]`.

Starts an embedded Kafka-compatible broker and `c360 serve` on the bench database (seeded by
bench/run.py, or seeds 2,000 customers itself), opens N graphql-transport-ws sockets each
subscribed to `lifecycleChanged`, then measures for every change the time from its commit
(the transition's `changedAt`, same machine clock) to each socket's frame:
  - changes made by `updateLifecycleStage` mutations,
  - changes made by `contract.renewed` events produced to Kafka.
Reports p50/p99/max and the delivery ratio (frames received / frames expected), and the
server's resident memory per idle subscription.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
import orjson
import redis.asyncio as aioredis
import websockets
from aiokafka import AIOKafkaProducer
from common import backend_args, bench_database, pct, serving, token  # bench/common.py
from sqlalchemy import text

from customer360.data.db import make_engine
from customer360.data.scope import tenant_scope
from customer360.devstack import embedded_kafka
from customer360.events.relay import channel

TENANT = "live"
SUB = json.dumps(
    {
        "id": "1",
        "type": "subscribe",
        "payload": {"query": "subscription { lifecycleChanged { transition { id changedAt } } }"},
    }
)


def rss_kb(pid: int) -> int:
    """Resident memory of the server: the process and, with --workers, its worker children."""
    total = 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":", 1) for line in status.read_text().splitlines() if ":" in line
            )
        except OSError:
            continue
        if int(fields.get("Pid", "0")) == pid or int(fields.get("PPid", "0")) == pid:
            total += int(fields.get("VmRSS", "0 kB").split()[0])
    return total


async def socket(
    url: str,
    bearer: str,
    ready: asyncio.Event,
    frames: list[tuple[float, str | bytes]],
    opened: list[int],
) -> None:
    async with websockets.connect(
        url, subprotocols=["graphql-transport-ws"], compression=None, max_queue=None
    ) as ws:
        init = {"type": "connection_init", "payload": {"Authorization": f"Bearer {bearer}"}}
        await ws.send(json.dumps(init))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        await ws.send(SUB)
        opened.append(1)
        ready.set()
        # Only the arrival time and the frame are kept here; parsing waits until the run is
        # over, so the measuring client (on the same two cores) perturbs what it measures
        # as little as it can.
        async for raw in ws:
            frames.append((time.time(), raw))


async def listen(redis_url: str, published: dict[str, float]) -> None:
    """Notes when each transition id was published on the tenant's pub/sub channel (ms)."""
    client = aioredis.from_url(redis_url)
    async with client.pubsub() as ps:
        await ps.subscribe(channel(TENANT))
        async for m in ps.listen():
            if m["type"] == "message":
                tid = orjson.loads(m["data"])["event"]["data"]["transition_id"]
                published[tid] = time.time() * 1000
    await client.aclose()


def tally(
    frames: list[tuple[float, str | bytes]], commits: dict[str, float] | None = None
) -> dict[str, list[float]]:
    """Each transition's frame latencies; `commits` gets each one's `changedAt`."""
    got: dict[str, list[float]] = {}
    commits = {} if commits is None else commits
    for now, raw in frames:
        msg = orjson.loads(raw)
        if msg["type"] == "next":
            t = msg["payload"]["data"]["lifecycleChanged"]["transition"]
            at = commits.get(t["id"])
            if at is None:
                at = commits[t["id"]] = datetime.fromisoformat(t["changedAt"]).timestamp()
            got.setdefault(t["id"], []).append(now - at)
    return got


async def main() -> None:
    ap = argparse.ArgumentParser()
    backend_args(ap)
    ap.add_argument("--sockets", type=int, default=1000)
    ap.add_argument("--changes", type=int, default=50)
    ap.add_argument("--settle", type=float, default=8.0, help="seconds to wait for frames")
    ap.add_argument("--interval", type=float, default=0.05, help="seconds between changes")
    ap.add_argument("--workers", type=int, default=1, help="gateway worker processes")
    ap.add_argument(
        "--per-change",
        action="store_true",
        help="print each change's first-last frame (ms), in the order they were made",
    )
    args = ap.parse_args()
    url = await bench_database(args.database, TENANT, 2000)
    engine = make_engine(url)
    # Targets chosen from the current stages, so every change is a real move (no no-ops).
    async with engine.begin() as c:
        await tenant_scope(c, TENANT)  # row-level security applies to a non-superuser owner
        rows = (
            await c.execute(
                text(
                    "SELECT id::text, stage FROM customers WHERE tenant_id=:t "
                    "ORDER BY id LIMIT 2000"
                ),
                {"t": TENANT},
            )
        ).all()
    movers = [(cid, "Onboarded" if stage == "Active" else "Active") for cid, stage in rows[:200]]
    renewable = [cid for cid, stage in rows[200:] if stage != "Active"]
    await engine.dispose()
    with embedded_kafka() as bootstrap:
        async with serving(url, args.redis, kafka=bootstrap, workers=args.workers) as (base, proc):
            tok = token(TENANT)
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                await asyncio.sleep(3)  # let the consumer group settle
                idle = rss_kb(proc.pid)
                frames: list[tuple[float, str | bytes]] = []
                opened: list[int] = []
                ready = asyncio.Event()
                ws_url = base.replace("http", "ws") + "/graphql"
                tasks = []
                for _ in range(args.sockets):
                    tasks.append(asyncio.create_task(socket(ws_url, tok, ready, frames, opened)))
                    await asyncio.sleep(0.002)
                while len(opened) < args.sockets:  # noqa: ASYNC110 - a plain poll is enough here
                    await asyncio.sleep(0.1)
                await asyncio.sleep(2)
                per_sub = (rss_kb(proc.pid) - idle) / args.sockets
                # When each change reached Redis pub/sub: splits commit-to-frame into the part
                # before the publish (transaction end, relay) and after it (hub, fan-out).
                published: dict[str, float] = {}
                listener = asyncio.create_task(listen(args.redis, published))
                # The client's own full collections (its 1,000 sockets and the frames it keeps)
                # took 130-140 ms and were counted as the server's latency: none while measuring.
                gc.collect()
                gc.freeze()
                gc.disable()
                headers = {"Authorization": f"Bearer {tok}"}
                doc = (
                    "mutation($i: UpdateLifecycleStageInput!) { updateLifecycleStage(input: $i)"
                    " { transition { id } } }"
                )
                mutation_ids = []
                started = time.monotonic()
                for n in range(args.changes):
                    customer, stage = movers[n]
                    r = await http.post(
                        "/graphql",
                        headers=headers,
                        json={
                            "query": doc,
                            "variables": {"i": {"customerId": customer, "stage": stage}},
                        },
                    )
                    t = r.json()["data"]["updateLifecycleStage"]["transition"]
                    if t:
                        mutation_ids.append(t["id"])
                    await asyncio.sleep(args.interval)
                rates = {"mutation": args.changes / (time.monotonic() - started)}
                await asyncio.sleep(args.settle)
                # Kafka: renewals move Prospect/Onboarded customers to Active by the default rule
                mutation_frames = len(frames)
                producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
                await producer.start()
                started = time.monotonic()
                for cid in renewable[: args.changes]:
                    ev = {
                        "specversion": "1.0",
                        "id": uuid.uuid4().hex,
                        "source": "bench",
                        "type": "contract.renewed",
                        "time": "2026-01-01T00:00:00Z",
                        "tenantid": TENANT,
                        "data": {
                            "customer_id": cid,
                            "contract_id": "K",
                            "renewed_at": "2026-01-01T00:00:00Z",
                        },
                    }
                    await producer.send_and_wait(
                        "contract.renewed", json.dumps(ev).encode(), key=cid.encode()
                    )
                    await asyncio.sleep(args.interval)
                rates["kafka event"] = args.changes / (time.monotonic() - started)
                await producer.stop()
                await asyncio.sleep(args.settle)
                gc.enable()
                listener.cancel()
                commits: dict[str, float] = {}
                got = tally(frames, commits)
                mutation_lat = [x for i in mutation_ids for x in got.get(i, [])]
                kafka_ids = list(tally(frames[mutation_frames:]))
                kafka_lat = [x for i in kafka_ids for x in got[i]]
                for t in tasks:
                    t.cancel()
            for name, ids_, lat in (
                ("mutation", mutation_ids, mutation_lat),
                ("kafka event", kafka_ids, kafka_lat),
            ):
                expected = len(ids_) * args.sockets
                print(
                    f"{name}: {len(ids_)} changes at {rates[name]:.1f}/s x {args.sockets} sockets, "
                    f"delivery ratio {len(lat) / expected if expected else 0:.4f}, "
                    f"p50 {pct(lat, 50) * 1000:.0f} ms, p99 {pct(lat, 99) * 1000:.0f} ms, "
                    f"max {max(lat, default=0) * 1000:.0f} ms"
                )
            print(f"memory per idle subscription: {per_sub:.1f} KB (server RSS)")
            if args.per_change:
                for name, ids_ in (("mutation", mutation_ids), ("kafka event", kafka_ids)):
                    print(f"{name} (published / first frame - last frame, ms after commit)")
                    print(
                        " ".join(
                            f"{published.get(i, 0) - commits[i] * 1000:.0f}/"
                            f"{min(got[i]) * 1000:.0f}-{max(got[i]) * 1000:.0f}"
                            for i in ids_
                            if got.get(i)
                        )
                    )


if __name__ == "__main__":
    try:  # the server runs on uvloop (uvicorn[standard]); the measuring client too
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
