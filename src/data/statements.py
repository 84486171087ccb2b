"""SQL by position, run on asyncpg itself or on a SQLAlchemy connection alike.

The hot paths (the API's reads, stage changes) talk to asyncpg directly: through SQLAlchemy
every statement costs its greenlet switches, compiled-cache lookup and result wrapping,
about as much CPU again as asyncpg's own work (docs/WRITE_PATH.md, "The gateway's share").
Code that serves both a driver connection and a unit of work on SQLAlchemy writes its SQL
once with `:name` parameters and runs it through an `Executor`.
"""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
from sqlalchemy.ext.asyncio import AsyncConnection

_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=512)
def positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """`:name` parameters as asyncpg's `$n`, and the names in their order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _PARAM.sub(number, sql), tuple(names)


@dataclass(frozen=True, slots=True)
class Statement:
    """One statement's positional text and the names its `$n` stand for."""

    sql: str
    names: tuple[str, ...]

    @classmethod
    def of(cls, sql: str) -> Statement:
        return cls(*positional(sql))

    def args(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(params[n] for n in self.names)


class Executor(Protocol):
    """Where a repository's statements run: rows come back as tuples by position."""

    async def rows(self, st: Statement, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]: ...

    async def run(self, st: Statement, params: Mapping[str, Any]) -> None: ...


# A span per statement when tracing is on (otel.Tracing.statement_span): the engine's
# instrumentation does not see asyncpg's own connections.
StatementSpan = Callable[[str], AbstractContextManager[None]]


class DriverExecutor:
    """On an asyncpg connection (the caller holds its transaction)."""

    def __init__(self, conn: asyncpg.Connection, span: StatementSpan | None = None) -> None:
        self.conn = conn
        self.span = span

    def _traced(self, st: Statement) -> AbstractContextManager[None]:
        return self.span(st.sql) if self.span is not None else contextlib.nullcontext()

    async def rows(self, st: Statement, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        with self._traced(st):
            rows: Sequence[Sequence[Any]] = await self.conn.fetch(st.sql, *st.args(params))
        return rows

    async def run(self, st: Statement, params: Mapping[str, Any]) -> None:
        with self._traced(st):
            await self.conn.execute(st.sql, *st.args(params))


class AlchemyExecutor:
    """On a SQLAlchemy connection: its unit of work's transaction, begun on first use as
    for any other statement of it."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def rows(self, st: Statement, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        return (await self.conn.exec_driver_sql(st.sql, st.args(params))).all()

    async def run(self, st: Statement, params: Mapping[str, Any]) -> None:
        await self.conn.exec_driver_sql(st.sql, st.args(params))
