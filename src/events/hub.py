"""In-process fan-out: one pub/sub connection per process, many GraphQL subscribers.

Subscribers are grouped by tenant, and the process listens to the channels of the tenants it
has subscribers of (so a busy tenant nobody here watches costs this process nothing); each
subscriber has a bounded queue, and one that falls behind is marked slow and dropped rather
than letting memory grow.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from customer360.observability import get_logger

from .pubsub import RESYNC, PubSubBackend
from .relay import channel

log = get_logger("customer360.hub")
QUEUE_SIZE = 512


@dataclass(eq=False)
class Subscriber:
    tenant: str
    # One slot beyond QUEUE_SIZE: room for the "slow" mark behind a full queue.
    queue: asyncio.Queue[dict[str, Any]] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_SIZE + 1)
    )
    slow: bool = False

    def offer(self, message: dict[str, Any]) -> None:
        if self.slow:
            return
        if self.queue.qsize() < QUEUE_SIZE:
            self.queue.put_nowait(message)
            return
        # Too far behind: this message and every later one are dropped, none before it. The
        # consumer gets what is queued, then the mark, and closes; its client resumes after
        # the last change it saw and is replayed the rest. (Dropping the oldest instead let
        # it see later changes, resume past the dropped one and never see it.)
        self.slow = True
        self.queue.put_nowait({"slow": True})


class Hub:
    def __init__(self, backend: PubSubBackend) -> None:
        self.backend = backend
        self._tenants: dict[str, set[Subscriber]] = {}
        self._pump: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Hub:
        await self.backend.connect()
        self._pump = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(BaseException):
                await self._pump
        await self.backend.disconnect()

    @contextlib.asynccontextmanager
    async def subscribe(self, tenant: str) -> AsyncIterator[Subscriber]:
        """A subscriber of `tenant`'s changes, which hears every change published after this
        returns (Redis confirmed the tenant's channel, or is down and a RESYNC will follow)."""
        sub = Subscriber(tenant)
        self._tenants.setdefault(tenant, set()).add(sub)
        try:
            await self.backend.subscribe(channel(tenant))
            yield sub
        finally:
            group = self._tenants.get(tenant)
            if group is not None:
                group.discard(sub)
                if not group:
                    del self._tenants[tenant]
                    self.backend.unsubscribe(channel(tenant))

    def deliver(self, message: dict[str, Any]) -> None:
        for sub in list(self._tenants.get(message.get("tenant", ""), ())):
            sub.offer(message)

    async def _run(self) -> None:
        while True:
            event = await self.backend.next_published()
            if event.channel == RESYNC:
                for group in list(self._tenants.values()):
                    for sub in list(group):
                        sub.offer({"resync": True})
                continue
            try:
                message = orjson.loads(event.message)
            except orjson.JSONDecodeError:
                log.warning("unreadable pub/sub message")
                continue
            if isinstance(message, dict):
                self.deliver(message)
