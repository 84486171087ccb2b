"""Redis cache: customer profiles (24 h) and lifecycle summaries (5 min).

Each cached value lives under a generation counter that the outbox relay bumps for every
committed change (`invalidate`), so a reader that raced a writer can never store its old
value where later readers look: it is filed under the old generation. Every read and write
is one round trip (a Lua script). Any Redis failure is a miss: reads fall back to PostgreSQL.

The process that wrote a change also remembers it for a few seconds (`note_written`), so it
never serves the old state from cache before the relay has caught up.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
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


class Cache:
    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._get = redis.register_script(_GET)
        self._put = redis.register_script(_PUT)
        self._written: dict[tuple[str, str], float] = {}

    # -- read-your-writes in this process -------------------------------------------------
    def note_written(self, tenant: str, customer_ids: Iterable[uuid.UUID]) -> None:
        until = time.monotonic() + LOCAL_GUARD_SECONDS
        if len(self._written) > 50_000:
            now = time.monotonic()
            self._written = {k: v for k, v in self._written.items() if v > now}
        self._written[(tenant, "summary")] = until
        for cid in customer_ids:
            self._written[(tenant, str(cid))] = until

    def _fresh_here(self, tenant: str, what: str) -> bool:
        until = self._written.get((tenant, what))
        return until is not None and until > time.monotonic()

    # -- profiles ---------------------------------------------------------------------------
    async def customers(
        self, tenant: str, ids: Sequence[uuid.UUID]
    ) -> tuple[dict[uuid.UUID, Any], dict[uuid.UUID, str]]:
        """(hits, generations of the misses) for the ids this process may serve from cache."""
        wanted = [i for i in ids if not self._fresh_here(tenant, str(i))]
        if not wanted:
            return {}, {}
        keys = [customer_key(tenant, i) for i in wanted]
        try:
            flat = await self._get(keys=[f"{k}:gen" for k in keys], args=keys)
        except (RedisError, OSError) as exc:
            log.warning("cache unavailable", error=type(exc).__name__)
            return {}, {}
        hits: dict[uuid.UUID, Any] = {}
        gens: dict[uuid.UUID, str] = {}
        for n, cid in enumerate(wanted):
            gen, raw = flat[2 * n], flat[2 * n + 1]
            if raw:
                hits[cid] = _decode(raw)
            else:
                gens[cid] = gen.decode() if isinstance(gen, bytes) else str(gen)
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
            gen, raw = await self._get(keys=[f"{key}:gen"], args=[key])
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


def invalidate(
    pipe: Any, tenant: str, customer_ids: Iterable[str], *, summary: bool, token: str
) -> None:
    """Queue generation changes on a pipeline (the relay's, driven by the outbox).

    `token` is unique for ever (the outbox row id), so a generation never comes back: a
    counter would restart after its key expired and could meet a value stored under the same
    number before. Generations outlive values (2 x 24 h against 24 h), so a value stored while
    no generation existed is gone before a generation key can expire back to nothing.
    """
    for cid in customer_ids:
        pipe.set(f"{customer_key(tenant, cid)}:gen", token, ex=PROFILE_TTL * 2)
    if summary:
        pipe.set(f"{summary_key(tenant)}:gen", token, ex=PROFILE_TTL * 2)
