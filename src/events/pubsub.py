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
from redis.asyncio.client import PubSub
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
    def unsubscribe(self, channel: str) -> None: ...
    async def next_published(self) -> Published: ...


# A subscriber waits this long for Redis to confirm its channel (so whatever commits after it
# read its starting point reaches it). Past that, Redis is down or slow: it goes on, and the
# confirmation that comes later is announced as a RESYNC, which makes it replay.
CONFIRM_SECONDS = 2.0
# How often the listener looks at the channel set between messages: the longest a new
# channel waits for its SUBSCRIBE to be sent.
POLL_SECONDS = 0.05


class ResilientRedisBackend:
    """One pub/sub connection per process, subscribed to the channels somebody here wants.

    Only the listener task uses the connection: it sends SUBSCRIBE and UNSUBSCRIBE for the
    channels added and dropped since its last look, and reads what comes back.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self._redis: aioredis.Redis | None = None
        self._wanted: set[str] = set()
        self._sent: set[str] = set()  # subscribed on the current connection, as last sent
        self._unanswered: dict[str, int] = {}  # SUBSCRIBEs sent, not yet confirmed
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._late: set[str] = set()  # a subscriber stopped waiting for its confirmation
        self._queue: asyncio.Queue[Published] = asyncio.Queue()
        self._listener: asyncio.Task[None] | None = None

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
        """Want `channel`; return once Redis confirmed it (or CONFIRM_SECONDS passed)."""
        self._wanted.add(channel)
        if self.listening(channel):
            return
        waiter = self._waiters.get(channel)
        if waiter is None:
            waiter = self._waiters[channel] = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(waiter), CONFIRM_SECONDS)
        except TimeoutError:
            self._late.add(channel)
            log.warning("redis pub/sub subscription not confirmed", channel=channel)

    def unsubscribe(self, channel: str) -> None:
        self._wanted.discard(channel)

    async def next_published(self) -> Published:
        return await self._queue.get()

    def listening(self, channel: str) -> bool:
        """Subscribed on the current connection, and Redis answered every SUBSCRIBE of it."""
        return channel in self._sent and channel not in self._unanswered

    def _confirm(self, channel: str) -> None:
        left = self._unanswered.get(channel, 0) - 1
        if left > 0:
            # An earlier SUBSCRIBE's answer: an UNSUBSCRIBE and another SUBSCRIBE followed it,
            # and until Redis has read that one, the channel may not be listened to.
            self._unanswered[channel] = left
            return
        self._unanswered.pop(channel, None)
        if channel not in self._sent:
            return  # let go meanwhile
        waiter = self._waiters.pop(channel, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if channel in self._late:
            self._late.discard(channel)
            self._queue.put_nowait(Published(RESYNC, ""))

    async def _follow(self, pubsub: PubSub) -> None:
        """Bring the connection's subscriptions to the channels wanted now."""
        added, dropped = self._wanted - self._sent, self._sent - self._wanted
        if dropped:
            self._sent -= dropped
            await pubsub.unsubscribe(*dropped)
        if added:
            self._sent |= added
            for channel in added:
                self._unanswered[channel] = self._unanswered.get(channel, 0) + 1
            await pubsub.subscribe(*added)

    async def _listen(self) -> None:
        backoff = 0.1
        lost = False
        while True:
            assert self._redis is not None
            pubsub = self._redis.pubsub()
            self._sent.clear()
            self._unanswered.clear()
            try:
                await self._follow(pubsub)
                if lost:
                    # What was published while no connection listened is gone: say so.
                    log.info("redis pub/sub resubscribed", channels=len(self._sent))
                    self._queue.put_nowait(Published(RESYNC, ""))
                lost, backoff = False, 0.1
                while True:
                    await self._follow(pubsub)
                    if pubsub.connection is None:  # nothing wanted yet: no connection either
                        await asyncio.sleep(POLL_SECONDS)
                        continue
                    message = await pubsub.get_message(timeout=POLL_SECONDS)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        self._confirm(message["channel"].decode())
                    elif message["type"] == "message":
                        data = message["data"]
                        self._queue.put_nowait(
                            Published(
                                message["channel"].decode(),
                                data.decode() if isinstance(data, bytes) else data,
                            )
                        )
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                lost = True
                log.warning("redis pub/sub lost", error=type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
