"""The async engine: one per process, built in the app's lifespan."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .keys import OPTION, TenantKeys


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def make_engine(
    url: str, *, pool_size: int = 10, max_overflow: int = 10, keys: TenantKeys | None = None
) -> AsyncEngine:
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_recycle=1800,
        # Bound values (a searched email, say) never reach an exception's text, nor the logs.
        hide_parameters=True,
        json_serializer=_dumps,
        json_deserializer=orjson.loads,
        # asyncpg's prepared-statement cache makes repeat queries one round trip.
        connect_args={"statement_cache_size": 512, "server_settings": {"jit": "off"}},
    )
    # Every connection of this engine can seal and open encrypted fields (data/keys.py).
    return engine if keys is None else engine.execution_options(**{OPTION: keys})
