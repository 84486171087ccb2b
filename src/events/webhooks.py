"""Webhooks out: the relay's sink that makes deliveries from the outbox, and the worker that
sends them, signed as Standard Webhooks describes (events/signing.py).

At least once: a delivery is marked only after its endpoint answered 2xx, so a crash or a
restart sends it again (same `webhook-id`, for the receiver to dedupe). In order per customer
per endpoint: the worker only attempts the head of each (endpoint, customer) queue. One
worker leads across all processes (a session advisory lock, as the relay's sinks do).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import orjson
from prometheus_client import Counter
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from customer360.data import webhooks as data
from customer360.observability import REGISTRY, get_logger

from .relay import OutboxRow
from .signing import TargetPolicy, TargetRefused, signatures

if TYPE_CHECKING:
    from customer360.tracing import Tracing

log = get_logger("customer360.webhooks")
LOCK = "c360-webhooks"
USER_AGENT = "customer360-webhooks/1"

# Finished deliveries (delivered or failed) are kept this long for the log, then deleted.
LOG_RETENTION_DAYS = 30
ATTEMPTS = Counter(
    "c360_webhook_attempts_total",
    "Webhook delivery attempts by outcome: delivered, retry (failed, tried again later), "
    "failed (failed for good)",
    ["outcome"],
    registry=REGISTRY,
)
_FORGET = text(
    "DELETE FROM webhook_deliveries WHERE status <> 'pending' "
    "AND created_at < now() - make_interval(days => :days)"
)

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[Address]]]


class WebhookSink:
    """The relay's third sink, for what no seal fanned out: an audit event's seal makes its
    deliveries and marks it (migration 0014), so this sink meets only rows linked at commit
    (the seed's copy, older gateways) and rows that are not audit events. One delivery per
    matching endpoint, in the database, by the statement that marks the drain's rows (never
    a dual write, and no transaction of its own: `mark` runs on the relay's connection)."""

    name, column = "webhooks", "webhooks_fanned_at"
    mark = data.FAN_OUT_AND_MARK

    async def reset(self) -> None:
        return None

    async def publish(self, rows: Sequence[OutboxRow]) -> None:
        return None  # done by `mark`


async def resolve(host: str, port: int) -> list[Address]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(str(i[4][0]).split("%", 1)[0]) for i in infos]


class WebhookWorker:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        schedule: Sequence[float],
        timeout: float = 10.0,
        max_response_bytes: int = 65536,
        disable_after: tuple[int, float] = (20, 5 * 86400.0),
        poll_seconds: float = 1.0,
        policy: TargetPolicy | None = None,
        batch: int = 100,
        resolver: Resolver = resolve,
        verify: ssl.SSLContext | bool = True,
        tracing: Tracing | None = None,
    ) -> None:
        self.engine = engine
        self.tracing = tracing
        self.schedule = list(schedule)
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.disable_after = disable_after
        self.poll_seconds = poll_seconds
        self.policy = policy or TargetPolicy()
        self.batch = batch
        self.resolver = resolver
        # No keep-alive: connections are made to a checked address, never reused for another.
        self.client = httpx.AsyncClient(
            verify=verify,  # the system's CAs; a context of its own in the tests
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    async def close(self) -> None:
        await self.client.aclose()

    async def run(self) -> None:
        # Untraced, as the relay's polling: nobody's request.
        with self.tracing.quiet() if self.tracing is not None else contextlib.nullcontext():
            await self._run()

    async def _run(self) -> None:
        while True:
            try:
                conn = await self.engine.connect()
                try:
                    await self._lead(conn)
                finally:
                    # The lock and the session's scope must never return to the pool.
                    await conn.invalidate()
                    await conn.close()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook worker restarting", error=type(exc).__name__)
                await asyncio.sleep(1.0)

    async def _lead(self, conn: AsyncConnection) -> None:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("SELECT set_config('app.scope', 'system', false)"))
        take = text("SELECT pg_try_advisory_lock(hashtextextended(:k, 0))")
        while not (await conn.execute(take, {"k": LOCK})).scalar():  # noqa: ASYNC110
            await asyncio.sleep(self.poll_seconds)
        log.info("webhook worker leading")
        loop = asyncio.get_running_loop()
        swept = loop.time()
        while True:
            if await self.work_once(conn) < self.batch:
                await asyncio.sleep(self.poll_seconds)
            if loop.time() - swept >= 300:
                swept = loop.time()
                await conn.execute(_FORGET, {"days": LOG_RETENTION_DAYS})

    async def work_once(self, conn: AsyncConnection) -> int:
        """Attempt every due head of queue once; record each outcome. Returns how many."""
        batch = await data.due(conn, self.batch)
        outcomes = await asyncio.gather(*(self.attempt(d) for d in batch))
        for d, (code, error) in zip(batch, outcomes, strict=True):
            if error is None:
                assert code is not None
                await data.delivered(conn, d, code)
                ATTEMPTS.labels("delivered").inc()
                continue
            retry = self.schedule[d.attempts] if d.attempts < len(self.schedule) else None
            ATTEMPTS.labels("failed" if retry is None else "retry").inc()
            await data.failed(conn, d, code, error, retry, self.disable_after)
            log.info("webhook delivery failed", delivery=str(d.id), error=error, retry_in=retry)
        return len(batch)

    async def attempt(self, d: data.Due) -> tuple[int | None, str | None]:
        """(status code, None) when delivered, else (status code or None, why not)."""
        try:
            return await asyncio.wait_for(self._post(d), self.timeout)
        except TimeoutError:
            return None, f"timed out after {self.timeout:g} s"
        except TargetRefused as exc:
            return None, f"refused target: {exc}"
        except (httpx.HTTPError, OSError) as exc:
            return None, f"{type(exc).__name__}: {str(exc)[:200]}"

    async def _post(self, d: data.Due) -> tuple[int | None, str | None]:
        if not d.secrets:
            return None, "the endpoint's secret cannot be opened (the tenant's key is gone)"
        self.policy.check_url(d.url)
        parts = urlsplit(d.url)
        host = parts.hostname
        assert host is not None
        https = parts.scheme == "https"
        port = parts.port or (443 if https else 80)
        # Resolved now and checked, and that very address connected to: a name that resolves
        # elsewhere at connect time (DNS rebinding) is never asked again.
        addresses = await self.resolver(host, port)
        if not addresses:
            return None, f"{host} does not resolve"
        for a in addresses:
            self.policy.check_address(a)
        ip = addresses[0]
        netloc = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
        url = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        body = orjson.dumps(d.payload)
        stamp = int(time.time())
        headers = {
            "Host": parts.netloc,
            "Content-Type": "application/cloudevents+json",
            "User-Agent": USER_AGENT,
            "webhook-id": d.event_id,
            "webhook-timestamp": str(stamp),
            "webhook-signature": signatures(d.secrets, d.event_id, stamp, body),
        }
        extensions: dict[str, Any] = {"sni_hostname": host} if https else {}
        request = self.client.build_request(
            "POST", url, content=body, headers=headers, extensions=extensions
        )
        response = await self.client.send(request, stream=True)
        try:
            # What the receiver says is read up to a limit, and otherwise ignored.
            seen = 0
            async for chunk in response.aiter_raw():
                seen += len(chunk)
                if seen > self.max_response_bytes:
                    break
        finally:
            with contextlib.suppress(Exception):
                await response.aclose()
        code = response.status_code
        if 200 <= code < 300:
            return code, None
        return code, f"HTTP {code}"
