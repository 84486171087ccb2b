"""Open WebSockets per principal, counted across every gateway process.

Each open socket holds a lease in Redis: a member of its principal's sorted set, scored by
when the lease runs out. Taking one is one Lua call (expired leases are dropped, then the
count is checked); each process renews its sockets' leases every `lease / 3` seconds and
hands a lease back when its socket closes, so the sockets of a process that dies stop
counting within one lease. The process also counts its own sockets: it never holds more than
the limit whatever Redis says, and while Redis cannot answer the limit holds per process
(live updates need Redis anyway; queries and mutations over a socket do not).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from customer360.observability import get_logger

from .principal import Principal

log = get_logger("customer360.sockets")
LEASE_SECONDS = 60.0
PrincipalKey = tuple[str, str]

# Lease ends are on Redis' clock, never a host's: a host whose clock ran ahead would drop
# the other processes' live leases as expired.
_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1e6\n"
# KEYS[1]: the principal's leases; ARGV: lease seconds, limit, the new member.
_TAKE = (
    _NOW
    + """
local lease, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= limit then return 0 end
redis.call('ZADD', KEYS[1], now + lease, ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(lease * 1000))
return 1
"""
)
# KEYS: each lease's principal set; ARGV[1]: lease seconds, then the leases, in KEYS' order.
_RENEW = (
    _NOW
    + """
local lease = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + lease, ARGV[i + 1])
  redis.call('PEXPIRE', key, math.ceil(lease * 1000))
end
return #KEYS
"""
)


def _redis_key(key: PrincipalKey) -> str:
    return f"c360:ws:{key[0]}:{key[1]}"


class Slot:
    """One open socket's place in its principal's budget; released once however often the
    socket's teardown paths call it."""

    __slots__ = ("_held", "_key", "_lease", "_owner")

    def __init__(self, owner: SocketSlots, key: PrincipalKey, lease: str | None) -> None:
        self._owner, self._key, self._lease, self._held = owner, key, lease, True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._owner._release(self._key, self._lease)


class SocketSlots:
    def __init__(self, limit: int, *, lease_seconds: float = LEASE_SECONDS) -> None:
        self.limit = limit
        self.lease_seconds = lease_seconds
        self._open: dict[PrincipalKey, int] = {}
        self._leases: dict[str, PrincipalKey] = {}  # held in Redis, renewed
        self._redis: aioredis.Redis | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._handing_back: set[asyncio.Task[None]] = set()
        self._names = (f"{uuid.uuid4().hex[:12]}:{n}" for n in itertools.count())

    @staticmethod
    def key(principal: Principal) -> PrincipalKey:
        # The token's own tenant, not the one a super admin acts in: switching tenants with
        # X-Tenant-Id must not multiply one person's budget.
        return principal.home_tenant, principal.subject

    async def acquire(self, principal: Principal, redis: aioredis.Redis) -> Slot | None:
        key = self.key(principal)
        held = self._open.get(key, 0)
        if held >= self.limit:
            return None
        self._open[key] = held + 1  # before the await: concurrent acquires see it
        name = next(self._names)
        lease: str | None = name
        try:
            granted = await redis.eval(
                _TAKE, 1, _redis_key(key), self.lease_seconds, self.limit, name
            )
        except (RedisError, OSError) as exc:
            log.warning("socket budget counted in this process only", error=type(exc).__name__)
            granted, lease = 1, None
        except BaseException:
            self._uncount(key)  # cancelled (the socket went): no place taken here
            raise
        if not granted:
            self._uncount(key)
            return None
        if lease is not None:
            self._redis = redis
            self._leases[lease] = key
            if self._renewer is None:
                self._renewer = asyncio.create_task(self._renew())
        return Slot(self, key, lease)

    def _uncount(self, key: PrincipalKey) -> None:
        left = self._open.get(key, 0) - 1
        if left > 0:
            self._open[key] = left
        else:
            # Dropped, not kept at zero: principals come and go, the dict must not grow.
            self._open.pop(key, None)

    def _release(self, key: PrincipalKey, lease: str | None) -> None:
        self._uncount(key)
        if lease is not None and self._leases.pop(lease, None) is not None:
            task = asyncio.get_running_loop().create_task(self._hand_back({lease: key}))
            self._handing_back.add(task)
            task.add_done_callback(self._handing_back.discard)

    async def _hand_back(self, leases: dict[str, PrincipalKey]) -> None:
        if self._redis is None or not leases:
            return
        with contextlib.suppress(RedisError, OSError):  # not handed back: it runs out
            async with self._redis.pipeline(transaction=False) as pipe:
                for lease, key in leases.items():
                    pipe.zrem(_redis_key(key), lease)
                await pipe.execute()

    async def _renew(self) -> None:
        """Push every held lease's end on; plain ZADD, so leases lost in a Redis restart
        come back."""
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            if self._redis is None or not self._leases:
                continue
            held = list(self._leases.items())
            keys = [_redis_key(key) for _, key in held]
            try:
                await self._redis.eval(
                    _RENEW, len(keys), *keys, self.lease_seconds, *(lease for lease, _ in held)
                )
            except Exception as exc:  # a renewer that died would let every lease run out
                log.warning("socket leases not renewed", error=type(exc).__name__)
            # A socket that closed meanwhile may have been handed back before this renewal
            # landed and brought it back: hand it back again.
            await self._hand_back({lease: key for lease, key in held if lease not in self._leases})

    async def close(self) -> None:
        """At shutdown: stop renewing and hand every lease back at once."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None
        leases, self._leases = self._leases, {}
        await self._hand_back(leases)
        if self._handing_back:
            await asyncio.gather(*self._handing_back, return_exceptions=True)
