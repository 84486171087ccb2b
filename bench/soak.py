"""Fault-sequence soak: `.venv/bin/python bench/soak.py [--minutes M] [--sockets N]`.

Starts a stack of its own (embedded PostgreSQL, Redis and a Kafka-compatible broker, two
`c360 serve` processes), runs mixed load (GraphQL reads, single and bulk updates, REST
PATCH, Kafka events, N live subscribers spread over both gateways, resuming with `after`)
and injects, one after another: a Redis restart, the broker down, a PostgreSQL restart, a
gateway SIGKILLed and started again, a consumer (a third gateway) joining mid-batch, the
other gateway SIGKILLed (so the relay leader dies, whichever it was). Then it lets
everything settle and checks, printing figures, and exits 1 if any check fails:
  - every accepted change has exactly one history row,
  - every change since the start has an audit event (duplicates counted by id),
  - every subscriber saw every change it was owed (live or replayed), none twice,
  - no Kafka event applied twice, `c360 audit verify` ok, cached profiles equal the
    database, the outbox drained.
"Broker down" freezes the broker (SIGSTOP) for the outage: the in-memory broker would come
back empty from a restart, which a real one does not (tests/live/test_fault_sequence.py
covers an empty broker for the audit topic).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import websockets
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from customer360.auth.tokens import issue_dev_token
from customer360.data.db import make_engine
from customer360.devstack import (
    _wait_port,
    embedded_kafka,
    embedded_postgres,
    embedded_redis,
    free_port,
)
from customer360.events.kafka import GROUP_ID

ROOT = Path(__file__).resolve().parents[1]
TENANT = "soak"
SECRET = "soak-secret-that-is-long-enough-for-hs256-0123456789"
DATA_KEY = "s1:" + "U09BS1NPQUtTT0FLU09BS1NPQUtTT0FLU09BS1NPQUs="
STAGES = ["Prospect", "Onboarded", "Active"]
LIVE = (
    "subscription($after: String) { lifecycleChanged(after: $after) { cursor transition { id } } }"
)


def token(sub: str) -> str:
    return issue_dev_token(
        SECRET,
        sub=sub,
        tenant=TENANT,
        roles=["ROLE_ACCOUNT_MANAGER"],
        issuer="c360-dev",
        audience="customer360",
        ttl=6 * 3600,
    )


class Stack:
    """The servers of this soak, each restartable on its address."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.exit = contextlib.ExitStack()
        self.redis_port, self.kafka_port = free_port(), free_port()
        self.gateways: dict[str, tuple[subprocess.Popen[bytes], int]] = {}

    def start(self) -> None:
        self.pg = embedded_postgres(self.folder / "pg", database="soak")
        self.db = self.pg.__enter__()
        self.redis = embedded_redis(self.folder, self.redis_port)
        self.redis_url = self.redis.__enter__()
        self.kafka = embedded_kafka(self.kafka_port)
        self.bootstrap = self.kafka.__enter__()

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("C360_")}
        env.update(
            C360_DATABASE_URL=self.db,
            C360_REDIS_URL=self.redis_url,
            C360_KAFKA_BOOTSTRAP=self.bootstrap,
            C360_JWT_SECRET=SECRET,
            C360_DATA_KEY=DATA_KEY,
            C360_DATA_DIR=str(self.folder / "data"),
            C360_LOG_LEVEL="WARNING",
            C360_RATE_LIMIT="100000",  # a soak's users do many changes: the limit is not under test
        )
        return env

    def gateway(self, name: str, port: int | None = None) -> str:
        port = port or (self.gateways[name][1] if name in self.gateways else free_port())
        log = (self.folder / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "customer360.cli", "serve", "--port", str(port)],
            env=self.env(),
            cwd=ROOT,
            stdout=log,
            stderr=log,
            start_new_session=True,  # its workers with it, for kill()
        )
        self.gateways[name] = (proc, port)
        _wait_port(port, 60)
        return f"http://127.0.0.1:{port}"

    def broker_pid(self) -> int:
        wanted = f"tcp://127.0.0.1:{self.kafka_port}"
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            with contextlib.suppress(OSError):
                args = cmdline.read_bytes().split(b"\0")
                if b"broker" in args and wanted.encode() in args:
                    return int(cmdline.parent.name)
        raise RuntimeError("the broker is not running")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """SIGKILL takes the gateway's every process at once, as the end of a pod or an OOM
        kill does. Killing the supervisor alone lets its workers stop gracefully, and two
        members leaving the group back to back can leave tansu 0.6.0 with a leader that is
        gone, for good (docs/RELIABILITY.md); src/workers.py's own tests cover that stop."""
        proc, _ = self.gateways[name]
        if sig == signal.SIGKILL:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        proc.wait(30)

    def restart(self, which: str) -> None:
        if which == "redis":
            self.redis.__exit__(None, None, None)
            self.redis = embedded_redis(self.folder, self.redis_port)
        elif which == "pg":
            self.pg = embedded_postgres(self.folder / "pg", database="soak")
        url = getattr(self, which).__enter__()
        if which == "pg" and url != self.db:
            raise RuntimeError(f"PostgreSQL came back elsewhere: {url}")

    def stop(self) -> None:
        for proc, _ in self.gateways.values():
            with contextlib.suppress(Exception):
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    # its workers then stop on their own, within their deadline (workers.py)
                    proc.kill()
        for server in (self.kafka, self.redis, self.pg):
            with contextlib.suppress(Exception):
                server.__exit__(None, None, None)


class Load:
    def __init__(self, urls: list[str], bootstrap: str, customers: list[str]) -> None:
        self.urls, self.bootstrap, self.customers = urls, bootstrap, customers
        self.accepted: set[str] = set()
        # event id -> (partition, offset, seconds since start) as the broker acknowledged it
        self.events_sent: dict[str, tuple[int, int, float]] = {}
        self.audit: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.stop = asyncio.Event()
        self.started = time.time()
        self.marks: dict[str, float] = {}  # seconds since the start, for reading a miss
        self.settled_s: dict[str, float] = {}  # per fault: waited for the group beforehand

    def mark(self, what: str) -> None:
        self.marks[what] = round(time.time() - self.started, 2)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    async def graphql(self, user: str, bulk: bool) -> None:
        headers = {"Authorization": f"Bearer {token(user)}"}
        async with httpx.AsyncClient(timeout=10) as http:
            while not self.stop.is_set():
                picks = random.sample(self.customers, 10 if bulk else 1)
                items = [{"customerId": c, "stage": random.choice(STAGES)} for c in picks]
                if bulk:
                    query = (
                        "mutation($i: [UpdateLifecycleStageInput!]!) { updateLifecycleStages"
                        "(inputs: $i) { results { success transition { id } } } }"
                    )
                    variables: dict[str, Any] = {"i": items}
                else:
                    query = (
                        "mutation($i: UpdateLifecycleStageInput!) { updateLifecycleStage"
                        "(input: $i) { transition { id } } }"
                    )
                    variables = {"i": items[0]}
                try:
                    resp = await http.post(
                        f"{random.choice(self.urls)}/graphql",
                        json={"query": query, "variables": variables},
                        headers=headers,
                    )
                    data = resp.json().get("data") or {}
                    if bulk and data.get("updateLifecycleStages"):
                        results = data["updateLifecycleStages"]["results"]
                    else:
                        results = [data.get("updateLifecycleStage")]
                    for r in results:
                        if r and r.get("transition"):
                            self.accepted.add(r["transition"]["id"])
                    if resp.json().get("errors"):
                        self.error("graphql " + resp.json()["errors"][0]["extensions"]["code"])
                except (httpx.HTTPError, ValueError):
                    self.error("graphql transport")
                await asyncio.sleep(0.05)

    async def rest(self, user: str) -> None:
        headers = {"Authorization": f"Bearer {token(user)}"}
        async with httpx.AsyncClient(timeout=10) as http:
            while not self.stop.is_set():
                cid = random.choice(self.customers)
                try:
                    resp = await http.patch(
                        f"{random.choice(self.urls)}/api/v1/customers/{cid}/lifecycle",
                        json={"stage": random.choice(STAGES)},
                        headers=headers,
                    )
                    if resp.status_code != 200:
                        self.error(f"rest {resp.status_code}")
                except httpx.HTTPError:
                    self.error("rest transport")
                await asyncio.sleep(0.1)

    async def reads(self) -> None:
        headers = {"Authorization": f"Bearer {token('reader')}"}
        query = "{ customers(first: 20) { edges { node { id name lifecycle { stage } } } } }"
        async with httpx.AsyncClient(timeout=10) as http:
            while not self.stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    await http.post(
                        f"{random.choice(self.urls)}/graphql",
                        json={"query": query},
                        headers=headers,
                    )
                await asyncio.sleep(0.05)

    async def events(self) -> None:
        while not self.stop.is_set():
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, acks="all", request_timeout_ms=5000
            )
            try:
                await producer.start()
                while not self.stop.is_set():
                    cid = random.choice(self.customers)
                    event_id = uuid.uuid4().hex
                    doc = {
                        "specversion": "1.0",
                        "id": event_id,
                        "source": "billing",
                        "type": "contract.renewed",
                        "time": "2026-12-06T00:00:00Z",
                        "tenantid": TENANT,
                        "data": {
                            "customer_id": cid,
                            "contract_id": event_id,
                            "renewed_at": "2026-12-06T00:00:00Z",
                        },
                    }
                    sent = await producer.send_and_wait(
                        "contract.renewed", json.dumps(doc).encode(), key=cid.encode()
                    )
                    at = round(time.time() - self.started, 1)
                    self.events_sent[event_id] = (sent.partition, sent.offset, at)
                    await asyncio.sleep(0.2)
            except Exception:  # the broker is down: try again
                self.error("kafka produce")
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.stop(), 5)

    async def audit_reader(self) -> None:
        while True:
            consumer = AIOKafkaConsumer(
                "audit.lifecycle.updated",
                bootstrap_servers=self.bootstrap,
                auto_offset_reset="earliest",
                group_id=None,
                # the topic is made again after the broker comes back: see it soon
                metadata_max_age_ms=1000,
            )
            try:
                await consumer.start()
                while True:
                    for records in (await consumer.getmany(timeout_ms=300)).values():
                        for r in records:
                            tid = json.loads(r.value)["data"]["transition_id"]
                            self.audit[tid] = self.audit.get(tid, 0) + 1
            except Exception:
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(consumer.stop(), 5)


class Subscriber:
    """A live list that resumes with the last cursor on every reconnection."""

    def __init__(self, url: str, name: str) -> None:
        # A principal each: the gateway admits 20 sockets per principal (4429 past that).
        self.url, self.name = url, name
        self.seen, self.twice, self.since, self.cursor = set(), 0, None, None
        self.ended = 0

    async def run(self) -> None:
        ws_url = self.url.replace("http", "ws") + "/graphql"
        while True:
            try:
                async with websockets.connect(
                    ws_url, subprotocols=["graphql-transport-ws"], compression=None, open_timeout=5
                ) as ws:
                    await ws.send(
                        json.dumps(
                            {
                                "type": "connection_init",
                                "payload": {"Authorization": f"Bearer {token(self.name)}"},
                            }
                        )
                    )
                    if json.loads(await ws.recv())["type"] != "connection_ack":
                        raise ConnectionError("not admitted")
                    await ws.send(
                        json.dumps(
                            {
                                "id": "1",
                                "type": "subscribe",
                                "payload": {"query": LIVE, "variables": {"after": self.cursor}},
                            }
                        )
                    )
                    if self.since is None:
                        self.since = time.time()
                    async for raw in ws:
                        msg = json.loads(raw)
                        if msg["type"] == "ping":
                            await ws.send(json.dumps({"type": "pong"}))
                        if msg["type"] in ("complete", "error"):
                            self.ended += 1
                            break  # the subscription ended (a failure inside): resume anew
                        if msg["type"] != "next" or not (msg["payload"].get("data") or {}):
                            continue
                        event = msg["payload"]["data"]["lifecycleChanged"]
                        self.cursor = event["cursor"]
                        tid = event["transition"]["id"]
                        self.twice += tid in self.seen
                        self.seen.add(tid)
            except Exception:
                await asyncio.sleep(0.5)


async def settle(check: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):  # a server of the stack may be down right now
            if await check():
                return True
        await asyncio.sleep(0.5)
    return False


async def soak(minutes: float, sockets: int, outage: float, folder: Path) -> int:
    stack = Stack(folder)
    stack.start()
    try:
        env = stack.env()
        await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "customer360.cli", "migrate"],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        # its own checks survive the PostgreSQL restart: a stale pooled connection is replaced
        engine = create_async_engine(stack.db, pool_pre_ping=True)
        from customer360.auth.ratelimit import Unlimited
        from customer360.data.keys import TenantKeys
        from customer360.settings import Settings
        from customer360.usecases import UseCases

        keyed = make_engine(stack.db, keys=TenantKeys(Settings(data_key=DATA_KEY).keyring()))  # type: ignore[call-arg]
        usecases = UseCases(keyed, limiter=Unlimited())
        customers = []
        for i in range(60):
            cid = str(uuid.uuid4())
            await usecases.apply_event(
                {
                    "specversion": "1.0",
                    "id": f"c-{cid}",
                    "source": "crm",
                    "type": "customer.created",
                    "time": "2026-12-06T00:00:00Z",
                    "tenantid": TENANT,
                    "data": {"customer_id": cid, "name": f"Soak {i}", "email": f"s{i}@example.com"},
                }
            )
            customers.append(cid)
        await keyed.dispose()
        urls = [stack.gateway("a"), stack.gateway("b")]
        load = Load(urls, stack.bootstrap, customers)
        subscribers = [Subscriber(urls[i % 2], f"watcher-{i}") for i in range(sockets)]
        tasks = [asyncio.create_task(s.run()) for s in subscribers]
        audit = asyncio.create_task(load.audit_reader())
        await asyncio.sleep(2)
        tasks += [asyncio.create_task(load.graphql(f"user-{i}", bulk=i == 0)) for i in range(3)]
        tasks += [
            asyncio.create_task(load.rest("rest-1")),
            asyncio.create_task(load.reads()),
            asyncio.create_task(load.events()),
        ]
        step = max(minutes * 60 / 7, outage + 5)

        async def caught_up() -> bool:
            async with engine.connect() as c:
                rows = (
                    await c.execute(
                        text(
                            "SELECT payload->'data'->>'transition_id' FROM outbox "
                            "WHERE topic = 'audit.lifecycle.updated' AND published_at IS NOT NULL"
                        )
                    )
                ).scalars()
                return all(t in load.audit for t in rows)

        faults: list[tuple[str, Any]] = []

        async def fault(name: str, action: Any) -> None:
            await asyncio.sleep(step)
            # One fault after another, each on a settled consumer group: tansu 0.6.0 (our
            # stand-in broker) wedges a group for good when its leader leaves while it
            # re-forms (docs/RELIABILITY.md), a case a Kafka broker resolves.
            target, waited = len(load.events_sent), time.monotonic()
            await settle(lambda: consumed(target), 60)
            load.settled_s[name] = round(time.monotonic() - waited, 1)
            await action()
            faults.append((name, round(time.time() - load.started, 1)))
            print(f"fault: {name} ({faults[-1][1]} s)", flush=True)

        async def redis_restart() -> None:
            stack.restart("redis")

        async def consumed(target: int | None = None) -> bool:
            """Every renewal sent (or the first `target` of them) applied by some member."""
            async with engine.connect() as c:
                n = (
                    await c.execute(
                        text(
                            "SELECT count(*) FROM processed_events WHERE type = 'contract.renewed'"
                        )
                    )
                ).scalar()
                return bool(n >= (len(load.events_sent) if target is None else target))

        async def broker_down() -> None:
            # Unresponsive rather than gone: the in-memory broker would come back empty,
            # which a real one does not (acknowledged records survive its restart); a
            # frozen broker also makes every client wait for its timeouts, the harder case.
            pid = stack.broker_pid()
            os.kill(pid, signal.SIGSTOP)
            await asyncio.sleep(outage)
            os.kill(pid, signal.SIGCONT)

        async def pg_restart() -> None:
            stack.pg.__exit__(None, None, None)
            await asyncio.sleep(min(outage, 10))
            stack.restart("pg")

        async def kill_a() -> None:
            stack.kill("a")
            await asyncio.sleep(2)
            stack.gateway("a")

        async def consumer_joins() -> None:
            stack.gateway("c")
            await asyncio.sleep(step / 2)
            stack.kill("c", signal.SIGTERM)

        async def kill_b() -> None:
            stack.kill("b")
            await asyncio.sleep(2)
            stack.gateway("b")

        for name, action in (
            ("redis restart", redis_restart),
            ("broker down", broker_down),
            ("postgres restart", pg_restart),
            ("gateway SIGKILL", kill_a),
            ("consumer joins mid-batch", consumer_joins),
            ("relay leader SIGKILL", kill_b),
        ):
            await fault(name, action)
        await asyncio.sleep(step)
        load.stop.set()
        load.mark("load stopped")
        writers = tasks[len(subscribers) :]
        for t in writers:
            t.cancel()
        await asyncio.gather(*writers, return_exceptions=True)

        async def drained() -> bool:
            async with engine.connect() as c:
                return (
                    await c.execute(
                        text(
                            "SELECT count(*) FROM outbox "
                            "WHERE published_at IS NULL OR redis_published_at IS NULL"
                        )
                    )
                ).scalar() == 0

        # A request the load abandoned goes on in its gateway and may commit a while later
        # (on a saturated box, a second or more): wait until nothing has committed for a
        # few seconds, or the subscribers would be stopped before a change they are owed.
        last: list[tuple[int, float, float]] = []

        async def quiet() -> bool:
            async with engine.connect() as c:
                n = (
                    await c.execute(
                        text("SELECT count(*) FROM lifecycle_history WHERE tenant_id = :t"),
                        {"t": TENANT},
                    )
                ).scalar()
            now = time.monotonic()
            if not last or last[-1][0] != n:
                last.append((int(n or 0), now, time.time()))
            return now - last[-1][1] >= 3.0

        await settle(quiet, 120)
        load.marks["last commit seen"] = round(last[-1][2] - load.started, 2) if last else 0.0
        outbox_ok = await settle(drained, 120)
        await settle(consumed, 60)

        async def delivered() -> bool:
            async with engine.connect() as c:
                ids = set(
                    (
                        await c.execute(
                            text(
                                "SELECT id::text FROM lifecycle_history WHERE tenant_id = :t "
                                "AND from_stage IS NOT NULL ORDER BY seq DESC LIMIT 50"
                            ),
                            {"t": TENANT},
                        )
                    ).scalars()
                )
            return all(ids <= s.seen for s in subscribers)

        # subscribers behind at the end (the box is saturated) catch up before the count
        await settle(delivered, 120)
        load.mark("subscribers stopped")
        for t in tasks[: len(subscribers)]:
            t.cancel()
        await settle(caught_up, 30)
        audit.cancel()
        return await verdict(engine, stack, load, subscribers, faults, outbox_ok, urls)
    finally:
        stack.stop()


async def _missed_details(engine: Any, ids: list[str], started: float) -> list[dict[str, Any]]:
    if not ids:
        return []
    async with engine.connect() as c:
        rows = (
            await c.execute(
                text(
                    "SELECT h.id::text AS id, h.seq, h.source, h.to_stage, "
                    "extract(epoch FROM h.changed_at) AS changed_at, o.id AS outbox_id, "
                    "o.history_seq, extract(epoch FROM o.created_at) AS outbox_created, "
                    "extract(epoch FROM o.redis_published_at) AS redis_published "
                    "FROM lifecycle_history h LEFT JOIN outbox o ON o.history_id = h.id "
                    "WHERE h.id::text = ANY(:ids)"
                ),
                {"ids": ids},
            )
        ).all()
    out = []
    for r in rows:
        row = dict(r._mapping)
        for k in ("changed_at", "outbox_created", "redis_published"):
            row[k] = None if row[k] is None else round(float(row[k]) - started, 2)
        out.append(row)
    return out


async def verdict(
    engine: Any,
    stack: Stack,
    load: Load,
    subscribers: list[Subscriber],
    faults: list[tuple[str, float]],
    outbox_ok: bool,
    urls: list[str],
) -> int:
    async with engine.connect() as c:
        history = dict(
            (
                await c.execute(
                    text(
                        "SELECT id::text, extract(epoch FROM changed_at)::float8 "
                        "FROM lifecycle_history "
                        "WHERE tenant_id = :t AND from_stage IS NOT NULL"
                    ),
                    {"t": TENANT},
                )
            ).all()
        )
        per_id = dict(
            (
                await c.execute(
                    text(
                        "SELECT id::text, count(*) FROM lifecycle_history "
                        "WHERE id::text = ANY(:ids) GROUP BY id"
                    ),
                    {"ids": list(load.accepted)},
                )
            ).all()
        )
        processed_ids = set(
            (
                await c.execute(
                    text("SELECT event_id FROM processed_events WHERE type = 'contract.renewed'")
                )
            ).scalars()
        )
        processed = len(processed_ids)
        renewals = (
            await c.execute(
                text("SELECT coalesce(sum(contract_renewal_count), 0) FROM customer_metrics")
            )
        ).scalar()
        profiles = dict(
            (
                await c.execute(
                    text("SELECT id::text, name FROM customers WHERE tenant_id = :t"), {"t": TENANT}
                )
            ).all()
        )
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "customer360.cli", "audit", "verify"],
        env=stack.env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    unprocessed = (
        await _unprocessed(stack, load, processed_ids) if processed < len(load.events_sent) else {}
    )
    missing_history = [t for t in load.accepted if per_id.get(t) != 1]
    no_audit = [t for t in history if t not in load.audit]
    audit_gap = sorted(history[t] - load.started for t in no_audit)
    audit_duplicates = sum(n - 1 for n in load.audit.values() if n > 1)
    owed_missing = 0
    sub_twice = sum(s.twice for s in subscribers)
    gaps: list[tuple[float, float, int]] = []
    missed_ids: dict[str, int] = {}
    for s in subscribers:
        owed = {t for t, at in history.items() if s.since is not None and at >= s.since + 1}
        missed = owed - s.seen
        owed_missing += len(missed)
        for t in missed:
            missed_ids[t] = missed_ids.get(t, 0) + 1
        if missed:
            times = sorted(history[t] - load.started for t in missed)
            gaps.append((round(times[0], 1), round(times[-1], 1), len(missed)))
    missed_changes = await _missed_details(engine, sorted(missed_ids)[:5], load.started)
    for change in missed_changes:
        change["subscribers_missing_it"] = missed_ids[change["id"]]
    cache_mismatch = 0
    async with httpx.AsyncClient(timeout=10) as http:
        for cid, name in list(profiles.items())[:30]:
            resp = await http.post(
                f"{urls[0]}/graphql",
                json={"query": f'{{ customer(id: "{cid}") {{ name }} }}'},
                headers={"Authorization": f"Bearer {token('checker')}"},
            )
            cache_mismatch += resp.json()["data"]["customer"]["name"] != name
    figures = {
        "faults": faults,
        "marks_s_since_start": load.marks,
        "group_settled_before_fault_s": load.settled_s,
        "accepted_changes": len(load.accepted),
        "history_rows": len(history),
        "accepted_without_exactly_one_history_row": len(missing_history),
        "history_rows_without_audit_event": len(no_audit),
        "audit_duplicates_same_id": audit_duplicates,
        "subscribers": len(subscribers),
        "subscribers_never_admitted": sum(s.since is None for s in subscribers),
        "changes_owed_not_seen": owed_missing,
        "changes_seen_twice_by_a_subscriber": sub_twice,
        "subscriptions_ended_by_the_server": sum(s.ended for s in subscribers),
        "missed_windows_s_since_start": gaps[:5],
        # what a missed change was and what became of its outbox row (seconds since start)
        "missed_changes": missed_changes,
        "audit_missing_window_s": [round(audit_gap[0], 1), round(audit_gap[-1], 1)]
        if audit_gap
        else [],
        "kafka_events_sent": len(load.events_sent),
        "renewal_events_processed": processed,
        "renewals_counted": renewals,
        "renewals_unprocessed": unprocessed,
        "audit_verify": out.stdout.strip() or out.stderr.strip(),
        "cached_profiles_differing": cache_mismatch,
        "outbox_drained": outbox_ok,
        "client_errors_during_faults": load.errors,
    }
    print(json.dumps(figures, indent=2), flush=True)
    ok = (
        all(s.since is not None for s in subscribers)
        and not missing_history
        and not no_audit
        and owed_missing == 0
        and sub_twice == 0
        and processed == renewals
        and processed >= len(load.events_sent)
        and out.returncode == 0
        and cache_mismatch == 0
        and outbox_ok
    )
    print("soak: ok" if ok else "soak: FAILED", flush=True)
    return 0 if ok else 1


_CONSUMER_WORDS = ("consumer", "event retry", "event waits", "offsets", "dead-letter", "group")


async def _unprocessed(stack: Stack, load: Load, processed: set[str]) -> dict[str, Any]:
    """Where the events no consumer applied are, and what the group and the gateways said:
    a failed soak explains itself (its folder is gone once it exits)."""
    missing = [v for k, v in load.events_sent.items() if k not in processed]
    per_partition: dict[int, list[tuple[int, float]]] = {}
    for partition, offset, at in missing:
        per_partition.setdefault(partition, []).append((offset, at))
    out: dict[str, Any] = {
        "partitions": {
            p: {"offsets": [min(v)[0], max(v)[0]], "sent_s": [min(v)[1], max(v)[1]], "n": len(v)}
            for p, v in sorted(per_partition.items())
        }
    }
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap, group_id=GROUP_ID)
    try:
        await consumer.start()
        tps = [TopicPartition("contract.renewed", p) for p in per_partition]
        out["group_committed"] = {tp.partition: await consumer.committed(tp) for tp in tps}
        if "contract.renewed.dlq" in await consumer.topics():
            dlq = [
                TopicPartition("contract.renewed.dlq", p)
                for p in consumer.partitions_for_topic("contract.renewed.dlq") or ()
            ]
            consumer.assign(dlq)
            await consumer.seek_to_beginning(*dlq)
            ends = await consumer.end_offsets(dlq)
            errors: dict[str, int] = {}
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(
                [await consumer.position(tp) < ends[tp] for tp in dlq]
            ):
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for r in records:
                        error = dict(r.headers).get("dlq.error", b"").decode()
                        errors[error] = errors.get(error, 0) + 1
            out["dead_lettered"] = errors
    except Exception as exc:  # the figures above still say where the events are
        out["group_error"] = repr(exc)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), 5)
    said: dict[str, int] = {}
    for log in stack.folder.glob("*.log"):
        for line in log.read_text(errors="replace").splitlines():
            # the gateways log for a console here (development), and aiokafka plainly
            what = line.split("] ", 1)[-1] if line[:2] == "20" else line
            if any(w in what for w in _CONSUMER_WORDS):
                key = f"{log.stem}: {' '.join(what.split())[:120]}"
                said[key] = said.get(key, 0) + 1
    out["consumer_log"] = said
    return out


def main() -> None:
    import logging

    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # the soak's own clients, in outages
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--sockets", type=int, default=200)
    parser.add_argument("--outage", type=float, default=60.0, help="seconds the broker is down")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="c360-soak-") as folder:
        sys.exit(asyncio.run(soak(args.minutes, args.sockets, args.outage, Path(folder))))


if __name__ == "__main__":
    main()
