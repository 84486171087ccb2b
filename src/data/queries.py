"""Reads for the API. Each call takes its own pooled connection: resolvers run concurrently."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import asyncpg
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from customer360.lifecycle import StageConfig

from . import models
from .cache import SUMMARY_TTL, Cache
from .chain import ALL_HISTORY, STAGE_SUMMARY
from .crypto import TenantCipher
from .customers import SEALED
from .keys import keys_of
from .lifecycle import load_stage_config
from .scope import tenant_scope
from .statements import AlchemyExecutor, positional


class Record(asyncpg.Record):  # type: ignore[misc]  # asyncpg ships no types
    """One row of a read, as the API layer sees it: attributes named as the columns."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def _fields(self) -> tuple[str, ...]:
        return tuple(self.keys())


_TENANT_PARAM = re.compile(r"(?<![:\w]):t\b")


@functools.lru_cache(maxsize=512)
def _scoped_statement(sql: str) -> tuple[str, tuple[str, ...]]:
    """A read of tenant `:t` as one statement that also sets the row-level security tenant
    (data/scope.py), for autocommit: one round trip instead of four (BEGIN, the setting, the
    read, COMMIT).

    The setting is transaction-local, so it ends with the statement's own implicit
    transaction. It must be made before the policy reads it: the read is a LATERAL subquery
    that takes its tenant from the setting's row (every `:t` becomes `c360_scope.tenant_id`),
    so PostgreSQL can only run it inside a nested loop after that row exists, and returns
    its rows in its own order (one outer row). Were the order ever otherwise, the policy
    would see no tenant and show nothing: it fails closed, never open."""
    inner, found = _TENANT_PARAM.subn("c360_scope.tenant_id", sql)
    if not found:
        raise ValueError("a tenant's read names its tenant (:t)")
    return positional(
        "WITH c360_scope AS MATERIALIZED (SELECT set_config('app.tenant_id', :t, true) "  # noqa: S608
        f"AS tenant_id) SELECT r.* FROM c360_scope CROSS JOIN LATERAL ({inner}) AS r"
    )


CUSTOMER_COLUMNS = (
    "id, tenant_id, name, email, phone, company_name, tier, tags, assigned_to, created_at, "
    "updated_at, stage, stage_entered_at, lifecycle_updated_at, lifecycle_updated_by, "
    "reason_code, source, version"
)
CUSTOMER_FIELDS = tuple(c.strip() for c in CUSTOMER_COLUMNS.split(","))
HISTORY_COLUMNS = (
    "id, customer_id, version, from_stage, to_stage, changed_at, changed_by, reason_code, source"
)


@dataclass(frozen=True, slots=True)
class Ordering:
    """A keyset ordering: SQL columns with their directions, all ending in the id. `keyed`:
    its index is on customer_list_keys (a column a stage change writes)."""

    columns: tuple[str, ...]
    descending: bool
    keyed: bool = False

    def order_by(self) -> str:
        d = " DESC" if self.descending else ""
        return ", ".join(f"{c}{d}" for c in self.columns)

    def after(self, n: int) -> str:
        """Rows strictly after the cursor, as one row comparison the index can use."""
        cols = ", ".join(self.columns)
        params = ", ".join(f":k{i}" for i in range(n))
        op = "<" if self.descending else ">"
        return f"({cols}) {op} ({params})"


# In a page's column list: the columns of its ordering, whichever it is (for cursors).
SORT_KEY = "(sort key)"
ORDERINGS = {
    "CREATED_AT_DESC": Ordering(("created_at", "id"), True),
    "UPDATED_AT_DESC": Ordering(("updated_at", "id"), True, keyed=True),
    "NAME_ASC": Ordering(("name", "id"), False),
    "STAGE_ENTERED_AT_DESC": Ordering(("stage_entered_at", "id"), True, keyed=True),
}

# The indexes over what a stage change writes are on customer_list_keys (migration 0016),
# whose row equals the customer's in every column they share. A list that one of them
# serves reads its page of keys in index order and each customer by primary key, under
# the table's own name, the shared columns taken from the keys: its statement reads as it
# would on `customers` alone. LATERAL, so that the planner cannot start from the customers:
# it estimates their row-level security rule by the tenant setting's value when it plans,
# which is empty for these one-statement reads (`_scoped_statement`), takes the tenant for a
# hundred rows and joins every key to all of them (145 ms for a page, docs/BENCHMARKS.md).
_KEYED = tuple(c.name for c in models.customer_list_keys.columns)
CUSTOMERS_BY_KEYS = (
    "(SELECT "  # noqa: S608 (the models' column names only)
    + ", ".join(
        [f"k.{c}" for c in _KEYED]
        + [f"c.{c.name}" for c in models.customers.columns if c.name not in _KEYED]
    )
    + " FROM customer_list_keys k CROSS JOIN LATERAL (SELECT * FROM customers c"
    " WHERE c.tenant_id = k.tenant_id AND c.id = k.id OFFSET 0) AS c) AS customers"
)


@dataclass(frozen=True, slots=True)
class CustomerFilterSpec:
    stages: tuple[str, ...] | None = None
    tier: str | None = None
    tag: str | None = None
    assigned_to: str | None = None
    search: str | None = None

    def reads_keys(self, order: str) -> bool:
        """Whether a page is read through customer_list_keys: when an index there gives it
        in order (by a time a stage change writes, or one stage newest first) and nothing
        filters on the customers' own columns, which the keys cannot check before the join.
        Other lists read `customers`, whose columns are the same."""
        keyed = ORDERINGS[order].keyed or (
            order == "CREATED_AT_DESC" and self.stages is not None and len(self.stages) == 1
        )
        return keyed and self.on_keys_only()

    def on_keys_only(self) -> bool:
        return (self.tier, self.tag, self.assigned_to, self.search) == (None, None, None, None)

    def where(self, params: dict[str, Any], email_index: bytes | None = None) -> str:
        """`email_index`: the search text's blind index (emails are stored sealed)."""
        clauses = ["tenant_id = :t", "deleted_at IS NULL"]
        if self.stages is not None and len(self.stages) == 1:
            # An equality, not ANY: the stage index then reads a page in order.
            clauses.append("stage = :stage")
            params["stage"] = self.stages[0]
        elif self.stages is not None:
            clauses.append("stage = ANY(:stages)")
            params["stages"] = list(self.stages)
        if self.tier is not None:
            clauses.append("tier = :tier")
            params["tier"] = self.tier
        if self.tag is not None:
            clauses.append("tags @> ARRAY[CAST(:tag AS text)]")
            params["tag"] = self.tag
        if self.assigned_to is not None:
            clauses.append("assigned_to = :assigned_to")
            params["assigned_to"] = self.assigned_to
        if self.search:
            clauses.append(
                "(name ILIKE :like ESCAPE '\\' OR company_name ILIKE :like ESCAPE '\\' "
                "OR email_bidx = :email_index)"
            )
            escaped = self.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            params["like"] = f"%{escaped}%"
            params["email_index"] = email_index
        return " AND ".join(clauses)


_ROWS = (asyncpg.Record, Row)


class ColumnNotRead(Exception):
    """A field read a column its read left out: its declaration (gql/projection.py `reads`) is
    short. The compiled path then leaves the request to strawberry, which reads whole rows."""


class Customer(tuple[Any, ...]):
    """A customer as the API reads it: the row's values, then the tenant's cipher, each
    column read by name as a named tuple's are (a page builds fifty of these per answer, so
    a C copy and C getters, not a dict per row). Its sealed fields are opened when read, not
    before: a page that shows no email pays for no decryption.

    `columns` says which columns the row holds, in CUSTOMER_FIELDS order: all of them, or
    those a page's selection reads (`shaped`)."""

    __slots__ = ()
    columns: tuple[str, ...] = CUSTOMER_FIELDS

    def __new__(cls, row: Any, cipher: TenantCipher | None) -> Customer:
        if isinstance(row, _ROWS):
            values = (*row, cipher)
        else:  # from the cache
            values = (*(getattr(row, f) for f in cls.columns), cipher)
        if len(values) != len(cls.columns) + 1:
            raise ValueError(f"a customer row of {cls.__name__} has {len(cls.columns)} columns")
        return tuple.__new__(cls, values)

    @classmethod
    def of_records(cls, records: Sequence[Record], cipher: TenantCipher | None) -> list[Customer]:
        """`cls(record, cipher)` for each record of one statement, without a Python call per
        row (a page makes fifty): one statement's records all have its width, checked once."""
        if records and len(records[0]) != len(cls.columns):
            raise ValueError(f"a customer row of {cls.__name__} has {len(cls.columns)} columns")
        new = tuple.__new__
        return [new(cls, (*r, cipher)) for r in records]

    if TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any: ...


def _sealed_column(field: str, at: int, id_at: int) -> property:
    def opened(self: Customer) -> str | None:
        cipher: TenantCipher | None = self[-1]
        return None if cipher is None else cipher.open(self[at], self[id_at], field)

    return property(opened, doc=f"{field}, opened with the tenant's key (None if erased)")


def _not_read(field: str) -> property:
    def missing(self: Customer) -> Any:
        raise ColumnNotRead(f"{field} was not read for this selection")

    return property(missing)


def _define(cls: type[Customer]) -> type[Customer]:
    at = {f: i for i, f in enumerate(cls.columns)}
    for field in CUSTOMER_FIELDS:
        if field not in at:
            read = _not_read(field)
        elif field in SEALED:
            read = _sealed_column(field, at[field], at["id"])
        else:
            read = property(itemgetter(at[field]))
        setattr(cls, field, read)
    return cls


_define(Customer)


@functools.lru_cache(maxsize=256)
def shaped(columns: frozenset[str]) -> type[Customer]:
    """The customer class holding only `columns` (plus the id, which sealed fields and the
    loaders need): one class per distinct selection, made once."""
    unknown = columns - set(CUSTOMER_FIELDS)
    if unknown:
        raise ValueError(f"not customer columns: {sorted(unknown)}")
    kept = tuple(f for f in CUSTOMER_FIELDS if f in columns or f == "id")
    return _define(type("ShapedCustomer", (Customer,), {"__slots__": (), "columns": kept}))


class Reads:
    """Single-statement reads in autocommit, each scoping itself to its tenant.

    The tenant's stage configuration is kept for `config_ttl` seconds per process (a saved
    configuration reaches other processes within that time; `forget_config` makes this
    process see its own save at once).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        cache: Cache | None = None,
        config_ttl: float = 1.0,
        span: Callable[[str], AbstractContextManager[None]] | None = None,
        pool: asyncpg.Pool | None = None,
    ) -> None:
        self.engine = engine
        # The statements of `_all` run on this pool's connections when given (db.driver_pool),
        # else on the engine's.
        self.pool = pool
        # A span per statement when tracing is on (otel.Tracing.statement_span): these reads run
        # on asyncpg itself, below the engine's instrumentation.
        self.span = span
        self.cache = cache
        self.config_ttl = config_ttl
        self._configs: dict[str, tuple[float, StageConfig]] = {}
        # Who wants to see each statement read here (tests counting round trips).
        self.observers: list[Callable[[str], None]] = []
        # tenant -> (generation, started, count): a reader whose Redis miss raced the store of
        # the same generation shares the count instead of querying again; never for longer
        # than Redis would keep it
        self._counting: dict[str, tuple[str, float, asyncio.Future[dict[str, int]]]] = {}

    def note_written(self, tenant_id: str, customer_ids: Mapping[uuid.UUID, int]) -> None:
        """Called at commit by this process's units of work (read-your-writes)."""
        if self.cache is not None:
            self.cache.note_written(tenant_id, customer_ids)

    @contextlib.asynccontextmanager
    async def _scoped(self, tenant_id: str | None) -> AsyncIterator[AsyncConnection]:
        """A short transaction whose row-level security tenant is `tenant_id` (data/scope.py).

        A transaction, not autocommit: the setting must end with it, never outlive it on a
        pooled connection."""
        async with self.engine.begin() as conn:
            if tenant_id is not None:
                await tenant_scope(conn, tenant_id)
            yield conn

    async def _all(self, sql: str, params: dict[str, Any]) -> Sequence[Record]:
        """One statement in autocommit, on asyncpg itself, scoped to its tenant (`:t`) by
        the statement itself (`_scoped_statement`): one round trip, a fraction of the
        Python that SQLAlchemy would spend."""
        if self.observers:
            for observe in self.observers:
                observe(positional(sql)[0])
        query, names = _scoped_statement(sql) if "t" in params else positional(sql)
        args = [params[n] for n in names]
        with self.span(query) if self.span is not None else contextlib.nullcontext():
            if self.pool is not None:
                async with self.pool.acquire() as raw:
                    rows: list[Record] = await raw.fetch(query, *args, record_class=Record)
                    return rows
            async with self.engine.connect() as conn:
                raw = (await conn.get_raw_connection()).driver_connection
                assert raw is not None
                try:
                    rows = await raw.fetch(query, *args, record_class=Record)
                    return rows
                finally:
                    if raw.is_in_transaction():
                        # Never opened here: something left one on this connection.
                        # SQLAlchemy does not know of it, so the pool would hand it on and
                        # the next unit of work would only write savepoints of it. Closed
                        # here (synchronously, as a cancelled task can), the pool replaces it.
                        raw.terminate()

    async def _cipher(self, tenant_id: str) -> TenantCipher | None:
        keys = keys_of(self.engine)
        cached = keys.cached(tenant_id)
        if cached is not None:
            return cached[0]
        async with self._scoped(tenant_id) as conn:
            return await keys.for_read(conn, tenant_id)

    async def _reveal(self, tenant_id: str, rows: Iterable[Any]) -> list[Customer]:
        """Customer rows whose email and phone open when read (None where erased or
        unreadable)."""
        cipher = await self._cipher(tenant_id)
        return [Customer(r, cipher) for r in rows]

    async def stage_config(self, tenant_id: str) -> StageConfig:
        now = time.monotonic()
        hit = self._configs.get(tenant_id)
        if hit is not None and now - hit[0] < self.config_ttl:
            return hit[1]
        async with self._scoped(tenant_id) as conn:
            config = await load_stage_config(AlchemyExecutor(conn), tenant_id)
        if len(self._configs) > 10_000:
            self._configs.clear()
        self._configs[tenant_id] = (now, config)
        return config

    def forget_config(self, tenant_id: str) -> None:
        self._configs.pop(tenant_id, None)

    async def customers_by_id(
        self, tenant_id: str, ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, Any]:
        # The cache holds rows as stored, sealed: opening happens here, after either source.
        if self.cache is None:
            rows: Iterable[Any] = (await self._customers_by_id(tenant_id, ids)).values()
        else:
            hits, gens = await self.cache.customers(tenant_id, ids)
            missing = [i for i in ids if i not in hits]
            if missing:
                found = await self._customers_by_id(tenant_id, missing)
                await self.cache.store_customers(tenant_id, list(found.values()), gens)
                hits.update(found)
            rows = hits.values()
        return {r.id: r for r in await self._reveal(tenant_id, rows)}

    async def _customers_by_id(
        self, tenant_id: str, ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, Record]:
        rows = await self._all(
            f"SELECT {CUSTOMER_COLUMNS} FROM customers "  # noqa: S608
            "WHERE tenant_id = :t AND id = ANY(:ids) AND deleted_at IS NULL",
            {"t": tenant_id, "ids": list(ids)},
        )
        return {r.id: r for r in rows}

    async def metrics_by_customer(
        self, tenant_id: str, ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, Record]:
        rows = await self._all(
            "SELECT * FROM customer_metrics WHERE tenant_id = :t AND customer_id = ANY(:ids)",
            {"t": tenant_id, "ids": list(ids)},
        )
        return {r.customer_id: r for r in rows}

    async def history_by_customer(
        self, tenant_id: str, ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, list[Record]]:
        """Whole histories, oldest first, for stage durations."""
        rows = await self._all(
            f"SELECT {HISTORY_COLUMNS} FROM {ALL_HISTORY} "  # noqa: S608
            "WHERE tenant_id = :t AND customer_id = ANY(:ids) ORDER BY customer_id, version",
            {"t": tenant_id, "ids": list(ids)},
        )
        out: dict[uuid.UUID, list[Record]] = {i: [] for i in ids}
        for r in rows:
            out[r.customer_id].append(r)
        return out

    async def list_customers(
        self,
        tenant_id: str,
        spec: CustomerFilterSpec,
        order: str,
        limit: int,
        after: tuple[Any, ...] | None,
        columns: frozenset[str] | None = None,
    ) -> Sequence[Any]:
        """A page of customers. `columns`: only those are read (and the id; SORT_KEY
        stands for the ordering's columns, which cursors are made of), for a selection that
        reads no other; None: whole rows."""
        ordering = ORDERINGS[order]
        params: dict[str, Any] = {"t": tenant_id, "limit": limit}
        where = spec.where(params, await self._blind(tenant_id, spec.search))
        if after is not None:
            where += " AND " + ordering.after(len(after))
            params.update({f"k{i}": v for i, v in enumerate(after)})
        if columns is not None and SORT_KEY in columns:
            columns = (columns - {SORT_KEY}) | set(ordering.columns)
        shape = Customer if columns is None else shaped(columns)
        source = CUSTOMERS_BY_KEYS if spec.reads_keys(order) else "customers"
        rows = await self._all(
            f"SELECT {', '.join(shape.columns)} FROM {source} WHERE {where} "  # noqa: S608
            f"ORDER BY {ordering.order_by()} LIMIT :limit",
            params,
        )
        return shape.of_records(rows, await self._cipher(tenant_id))

    async def _blind(self, tenant_id: str, search: str | None) -> bytes | None:
        if not search:
            return None
        cipher = await self._cipher(tenant_id)
        return None if cipher is None else cipher.blind(search)

    async def count_customers(self, tenant_id: str, spec: CustomerFilterSpec) -> int:
        params: dict[str, Any] = {"t": tenant_id}
        where = spec.where(params, await self._blind(tenant_id, spec.search))
        # By stage alone: the keys' stage index counts without reading a customer.
        by_keys = spec.stages is not None and spec.on_keys_only()
        source = "customer_list_keys" if by_keys else "customers"
        rows = await self._all(f"SELECT count(*) AS n FROM {source} WHERE {where}", params)  # noqa: S608
        return int(rows[0].n)

    async def stage_counts(self, tenant_id: str) -> dict[str, int]:
        """Per-stage counts, cached; concurrent misses for one tenant share one query."""
        if self.cache is None:
            return await self._stage_counts(tenant_id)
        counts, gen = await self.cache.summary(tenant_id)
        if counts is not None:
            return counts
        if gen is None:  # this process just wrote here, or Redis is away: ask PostgreSQL
            return await self._stage_counts(tenant_id)
        now = time.monotonic()
        known = self._counting.get(tenant_id)
        if known is not None and known[0] == gen and now - known[1] < SUMMARY_TTL:
            flight = known[2]
        else:
            flight = asyncio.ensure_future(self._count_and_store(tenant_id, gen))
            self._counting[tenant_id] = (gen, now, flight)
            flight.add_done_callback(lambda f: self._forget_failed(tenant_id, f))
        return await asyncio.shield(flight)

    def _forget_failed(self, tenant_id: str, flight: asyncio.Future[dict[str, int]]) -> None:
        known = self._counting.get(tenant_id)
        if known is not None and known[2] is flight and (flight.cancelled() or flight.exception()):
            del self._counting[tenant_id]

    async def _count_and_store(self, tenant_id: str, gen: str | None) -> dict[str, int]:
        assert self.cache is not None
        counts = await self._stage_counts(tenant_id)
        await self.cache.store_summary(tenant_id, counts, gen)
        return counts

    async def _stage_counts(self, tenant_id: str) -> dict[str, int]:
        rows = await self._all(STAGE_SUMMARY, {"t": tenant_id})
        return {r.stage: int(r.n) for r in rows}

    async def history_page(
        self, tenant_id: str, customer_id: uuid.UUID, limit: int, before_version: int | None
    ) -> Sequence[Record]:
        params: dict[str, Any] = {"t": tenant_id, "c": customer_id, "limit": limit}
        cond = ""
        if before_version is not None:
            cond = " AND version < :v"
            params["v"] = before_version
        return await self._all(
            f"SELECT {HISTORY_COLUMNS} FROM {ALL_HISTORY} "  # noqa: S608
            f"WHERE tenant_id = :t AND customer_id = :c{cond} ORDER BY version DESC LIMIT :limit",
            params,
        )

    async def history_count(self, tenant_id: str, customer_id: uuid.UUID) -> int:
        rows = await self._all(
            f"SELECT count(*) AS n FROM {ALL_HISTORY} "  # noqa: S608
            "WHERE tenant_id = :t AND customer_id = :c",
            {"t": tenant_id, "c": customer_id},
        )
        return int(rows[0].n)

    async def stage_at(self, tenant_id: str, customer_id: uuid.UUID, as_of: datetime) -> str | None:
        rows = await self._all(
            f"SELECT to_stage FROM {ALL_HISTORY} "  # noqa: S608
            "WHERE tenant_id = :t AND customer_id = :c "
            "AND changed_at <= :at ORDER BY version DESC LIMIT 1",
            {"t": tenant_id, "c": customer_id, "at": as_of},
        )
        return rows[0].to_stage if rows else None

    async def history_since(
        self,
        tenant_id: str,
        after_seq: int,
        customer_id: uuid.UUID | None,
        stage: str | None,
        limit: int = 500,
    ) -> Sequence[Record]:
        """Sealed changes after a position, oldest first, for subscribers catching up: a row
        reaches replay when sealed, with a seq above every seq sealed before it."""
        params: dict[str, Any] = {"t": tenant_id, "s": after_seq, "limit": limit}
        cond = ""
        if customer_id is not None:
            cond += " AND customer_id = :c"
            params["c"] = customer_id
        if stage is not None:
            cond += " AND (to_stage = :stage OR from_stage = :stage)"
            params["stage"] = stage
        return await self._all(
            f"SELECT {HISTORY_COLUMNS}, seq FROM lifecycle_history "  # noqa: S608
            f"WHERE tenant_id = :t AND seq > :s AND chain_pos IS NOT NULL{cond} "
            "ORDER BY seq LIMIT :limit",
            params,
        )

    async def last_seq(self, tenant_id: str) -> int:
        rows = await self._all(
            "SELECT COALESCE(max(seq), 0) AS s FROM lifecycle_history "
            "WHERE tenant_id = :t AND chain_pos IS NOT NULL",
            {"t": tenant_id},
        )
        return int(rows[0].s)

    async def ping(self) -> None:
        await self._all("SELECT 1", {})
