"""Redis cache: customer profiles (24 h) and lifecycle summaries (5 min).

Each cached value lives under a generation counter that the outbox relay bumps for every
committed change (`Invalidator`), so a reader that raced a writer can never store its old
value where later readers look: it is filed under the old generation. Every read and write
is one round trip (a Lua script), and the reads of all requests in one turn of the event
loop share theirs. Any Redis failure is a miss: reads fall back to PostgreSQL.

The process that wrote a change remembers, per customer, the generation its outbox row will
set (`note_written`) and reads that customer from PostgreSQL until the cache shows it: it
never serves its own write's old state, however late the relay. The tenant's summary, whose
generations are not ordered, is bypassed for a few seconds after a write instead.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from customer360.observability import get_logger

log = get_logger("customer360.cache")
# v2: rows are cached as stored (email and phone sealed); v1 entries held plaintext.
PREFIX = "c360:v2"
PROFILE_TTL = 24 * 3600
SUMMARY_TTL = 300
LOCAL_GUARD_SECONDS = 5.0
# A relay stalled longer than this (Redis or its leader away) is not waited for: the cached
# value is then served again. Until then this process reads its own writes from PostgreSQL.
AWAIT_RELAY_SECONDS = 600.0

# KEYS: gen keys; ARGV: value-key prefixes (same order). Returns [gen, value] pairs.
_GET = """
local out = {}
for i, gk in ipairs(KEYS) do
  local gen = redis.call('GET', gk) or '0'
  out[#out + 1] = gen
  out[#out + 1] = redis.call('GET', ARGV[i] .. ':' .. gen) or false
end
return out
"""
# KEYS: gen keys; ARGV: ttl, then (prefix, gen, value) triples. Stores only if unchanged.
_PUT = """
local ttl = tonumber(ARGV[1])
for i, gk in ipairs(KEYS) do
  local base = 2 + (i - 1) * 3
  if (redis.call('GET', gk) or '0') == ARGV[base + 1] then
    redis.call('SET', ARGV[base] .. ':' .. ARGV[base + 1], ARGV[base + 2], 'EX', ttl)
  end
end
return 1
"""

_DATES = ("created_at", "updated_at", "stage_entered_at", "lifecycle_updated_at")


def _encode(row: Any) -> bytes:
    doc = {k: getattr(row, k) for k in row._fields}
    return orjson.dumps(doc, default=str)  # asyncpg hands out its own UUID type


def _decode(raw: bytes) -> SimpleNamespace:
    doc = orjson.loads(raw)
    doc["id"] = uuid.UUID(doc["id"])
    for k in _DATES:
        doc[k] = datetime.fromisoformat(doc[k])
    return SimpleNamespace(**doc)


def customer_key(tenant: str, cid: uuid.UUID | str) -> str:
    return f"{PREFIX}:{tenant}:customer:{cid}"


def summary_key(tenant: str) -> str:
    return f"{PREFIX}:{tenant}:summary"


# Batched reads under way: a task nobody else holds could be collected before it ends.
_IN_FLIGHT: set[asyncio.Task[None]] = set()


class Cache:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._get = redis.register_script(_GET)
        # Reads asked for in this turn of the event loop, sent together (`_read`).
        self._asked: list[tuple[list[str], asyncio.Future[list[Any]]]] = []
        self._put = redis.register_script(_PUT)
        self._written: dict[tuple[str, str], float] = {}
        # (tenant, customer) -> (the generation the relay will set for this process's write,
        # give up waiting after): until the cache shows that generation, it is old for us.
        self._awaited: dict[tuple[str, str], tuple[int, float]] = {}

    # -- read-your-writes in this process -------------------------------------------------
    def note_written(self, tenant: str, written: Mapping[uuid.UUID, int]) -> None:
        now = time.monotonic()
        if len(self._written) > 50_000:
            self._written = {k: v for k, v in self._written.items() if v > now}
        if len(self._awaited) > 50_000:
            self._awaited = {k: v for k, v in self._awaited.items() if v[1] > now}
        self._written[(tenant, "summary")] = now + LOCAL_GUARD_SECONDS
        for cid, generation in written.items():
            self._awaited[(tenant, str(cid))] = (generation, now + AWAIT_RELAY_SECONDS)

    def _fresh_here(self, tenant: str, what: str) -> bool:
        until = self._written.get((tenant, what))
        return until is not None and until > time.monotonic()

    def _awaiting(self, tenant: str, cid: uuid.UUID, generation: str) -> bool:
        """Whether this process wrote the customer and the relay has not yet set the
        generation of that write (or a later one): the cached value may be older."""
        key = (tenant, str(cid))
        awaited = self._awaited.get(key)
        if awaited is None:
            return False
        if awaited[1] <= time.monotonic() or (
            generation.isdigit() and int(generation) >= awaited[0]
        ):
            # Outbox ids only grow, and one customer's rows are published in id order.
            del self._awaited[key]
            return False
        return True

    # -- one round trip for the reads of many requests -------------------------------------
    def _read(self, keys: list[str]) -> asyncio.Future[list[Any]]:
        """[generation, value] for each key. Every read asked for in one turn of the event
        loop goes to Redis as one script call: under load, the requests a turn resumes read
        their customers together, and pay redis-py's per-command work (the pool, the retry
        wrapper, the timeouts, the parser) once between them."""
        loop = asyncio.get_running_loop()
        if not self._asked:
            loop.call_soon(self._send)
        asked = loop.create_future()
        self._asked.append((keys, asked))
        return asked

    def _send(self) -> None:
        batch, self._asked = self._asked, []
        task = asyncio.ensure_future(self._answer(batch))
        _IN_FLIGHT.add(task)
        task.add_done_callback(_IN_FLIGHT.discard)

    async def _answer(self, batch: list[tuple[list[str], asyncio.Future[list[Any]]]]) -> None:
        keys = [k for wanted, _ in batch for k in wanted]
        try:
            flat = await self._get(keys=[f"{k}:gen" for k in keys], args=keys)
        except asyncio.CancelledError:
            for _, asked in batch:
                asked.cancel()
            raise
        except Exception as exc:  # each reader treats it as its own failure: a miss
            for _, asked in batch:
                if not asked.done():
                    asked.set_exception(exc)
            return
        at = 0
        for wanted, asked in batch:
            if not asked.done():  # its reader may have been cancelled meanwhile
                asked.set_result(flat[at : at + 2 * len(wanted)])
            at += 2 * len(wanted)

    # -- profiles ---------------------------------------------------------------------------
    async def customers(
        self, tenant: str, ids: Sequence[uuid.UUID]
    ) -> tuple[dict[uuid.UUID, Any], dict[uuid.UUID, str]]:
        """(hits, generations of the misses) for the ids this process may serve from cache:
        not a customer whose own write here the relay has not caught up with yet."""
        wanted = list(ids)
        if not wanted:
            return {}, {}
        keys = [customer_key(tenant, i) for i in wanted]
        try:
            flat = await self._read(keys)
        except (RedisError, OSError) as exc:
            log.warning("cache unavailable", error=type(exc).__name__)
            return {}, {}
        hits: dict[uuid.UUID, Any] = {}
        gens: dict[uuid.UUID, str] = {}
        for n, cid in enumerate(wanted):
            gen, raw = flat[2 * n], flat[2 * n + 1]
            generation = gen.decode() if isinstance(gen, bytes) else str(gen)
            if self._awaiting(tenant, cid, generation):
                continue  # read from PostgreSQL, and not stored under a generation now old
            if raw:
                hits[cid] = _decode(raw)
            else:
                gens[cid] = generation
        return hits, gens

    async def store_customers(
        self, tenant: str, rows: Sequence[Any], gens: dict[uuid.UUID, str]
    ) -> None:
        items = [(r, gens[r.id]) for r in rows if r.id in gens]
        if not items:
            return
        keys = [customer_key(tenant, r.id) for r, _ in items]
        args: list[Any] = [PROFILE_TTL]
        for key, (row, gen) in zip(keys, items, strict=True):
            args += [key, gen, _encode(row)]
        try:
            await self._put(keys=[f"{k}:gen" for k in keys], args=args)
        except (RedisError, OSError) as exc:
            log.warning("cache unavailable", error=type(exc).__name__)

    # -- summaries --------------------------------------------------------------------------
    async def summary(self, tenant: str) -> tuple[dict[str, int] | None, str | None]:
        if self._fresh_here(tenant, "summary"):
            return None, None
        key = summary_key(tenant)
        try:
            gen, raw = await self._read([key])
        except (RedisError, OSError) as exc:
            log.warning("cache unavailable", error=type(exc).__name__)
            return None, None
        if raw:
            counts: dict[str, int] = orjson.loads(raw)
            return counts, None
        return None, gen.decode() if isinstance(gen, bytes) else str(gen)

    async def store_summary(self, tenant: str, counts: dict[str, int], gen: str | None) -> None:
        if gen is None:
            return
        key = summary_key(tenant)
        try:
            await self._put(keys=[f"{key}:gen"], args=[SUMMARY_TTL, key, gen, orjson.dumps(counts)])
        except (RedisError, OSError) as exc:
            log.warning("cache unavailable", error=type(exc).__name__)


# KEYS: generation keys; ARGV: ttl, one token per key, then (channel, message) pairs.
# Caches first, then subscribers: one told about a customer must not find it cached as it
# was. One call per relay drain: as a pipeline, a bulk call's 300 rows were 600 commands,
# each packed and answered in Python (a fifth of the gateway's CPU under bulk writes).
_BUMP = """
local n = #KEYS
for i, gk in ipairs(KEYS) do
  redis.call('SET', gk, ARGV[1 + i], 'EX', ARGV[1])
end
for i = n + 2, #ARGV, 2 do
  redis.call('PUBLISH', ARGV[i], ARGV[i + 1])
end
return n
"""


class Invalidator:
    """Generation changes and the messages that announce them, driven by the outbox relay.

    A token is unique for ever (the outbox row id), so a generation never comes back: a
    counter would restart after its key expired and could meet a value stored under the same
    number before. Generations outlive values (2 x 24 h against 24 h), so a value stored while
    no generation existed is gone before a generation key can expire back to nothing.
    """

    def __init__(self, redis: aioredis.Redis) -> None:
        self._bump = redis.register_script(_BUMP)

    async def __call__(
        self,
        customers: Mapping[tuple[str, str], str],
        summaries: Mapping[str, str],
        messages: Sequence[tuple[str, bytes]],
    ) -> None:
        """Set each (tenant, customer)'s and each tenant summary's generation to its token,
        then publish each (channel, message), in that order, in one round trip."""
        keys = [f"{customer_key(t, c)}:gen" for t, c in customers]
        keys += [f"{summary_key(t)}:gen" for t in summaries]
        tokens = [*customers.values(), *summaries.values()]
        published = [part for pair in messages for part in pair]
        await self._bump(keys=keys, args=[PROFILE_TTL * 2, *tokens, *published])
