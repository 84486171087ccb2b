"""A Redis pub/sub backend for broadcaster that survives Redis restarts.

broadcaster 0.3.1's own Redis backend delivers nothing with redis-py 8 and its listener stops
silently after a reconnect, so this one keeps its own listener: it reconnects with backoff,
resubscribes, and reports every reconnect as a `RESYNC` event so subscribers can replay what
they may have missed from PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import redis.asyncio as aioredis
from broadcaster._backends.base import BroadcastBackend
from broadcaster._base import Event
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from customer360.observability import get_logger

log = get_logger("customer360.pubsub")
RESYNC = "__resync__"


class ResilientRedisBackend(BroadcastBackend):
    def __init__(self, url: str) -> None:
        self.url = url
        self._redis: aioredis.Redis | None = None
        self._channels: set[str] = set()
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._listener: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    async def connect(self) -> None:
        self._redis = aioredis.Redis.from_url(
            self.url, socket_keepalive=True, health_check_interval=5
        )
        self._listener = asyncio.create_task(self._listen())

    async def disconnect(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(BaseException):
                await self._listener
        if self._redis is not None:
            await self._redis.aclose()

    async def subscribe(self, group: str) -> None:
        self._channels.add(group)
        self._changed.set()

    async def unsubscribe(self, group: str) -> None:
        self._channels.discard(group)
        self._changed.set()

    async def publish(self, channel: str, message: Any) -> None:
        assert self._redis is not None
        for attempt in range(5):
            try:
                await self._redis.publish(channel, message)
                return
            except (RedisConnectionError, OSError):
                if attempt == 4:
                    raise
                await asyncio.sleep(0.1 * 2**attempt)

    async def next_published(self) -> Event:
        return await self._queue.get()

    async def _listen(self) -> None:
        backoff = 0.1
        first = True
        while True:
            assert self._redis is not None
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                current = set(self._channels)
                if current:
                    await pubsub.subscribe(*current)
                if not first:
                    log.info("redis pub/sub resubscribed", channels=sorted(current))
                    self._queue.put_nowait(Event(RESYNC, ""))
                first, backoff = False, 0.1
                self._changed.clear()
                while True:
                    if self._changed.is_set():
                        break  # channel set changed: resubscribe on a fresh connection
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message["type"] == "message":
                        channel = message["channel"].decode()
                        data = message["data"]
                        self._queue.put_nowait(
                            Event(channel, data.decode() if isinstance(data, bytes) else data)
                        )
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("redis pub/sub lost", error=type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
