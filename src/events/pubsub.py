"""The pub/sub backend the in-process hub listens to, and its Redis implementation.

The Redis listener survives restarts: it reconnects with backoff, resubscribes, and reports
every reconnect as a `RESYNC` message so subscribers can replay what they may have missed from
PostgreSQL. (broadcaster's Redis backend, used before, delivered nothing with redis-py 8 and
stopped silently after a reconnect.)
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import NamedTuple, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from customer360.observability import get_logger

log = get_logger("customer360.pubsub")
RESYNC = "__resync__"


class Published(NamedTuple):
    channel: str
    message: str


class PubSubBackend(Protocol):
    async def connect(self) -> None: ...
    async def disconnect(self) -> None: ...
    async def subscribe(self, channel: str) -> None: ...
    async def next_published(self) -> Published: ...


class ResilientRedisBackend:
    def __init__(self, url: str) -> None:
        self.url = url
        self._redis: aioredis.Redis | None = None
        self._channels: set[str] = set()
        self._queue: asyncio.Queue[Published] = asyncio.Queue()
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

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        self._changed.set()

    async def next_published(self) -> Published:
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
                    self._queue.put_nowait(Published(RESYNC, ""))
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
                            Published(channel, data.decode() if isinstance(data, bytes) else data)
                        )
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("redis pub/sub lost", error=type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
