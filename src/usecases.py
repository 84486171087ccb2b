"""The application's use cases: the one way GraphQL, REST, the Kafka consumers and the CLI
change anything.

Each use case opens one unit of work, hands it to the domain (or to the event handlers),
and commits once, only when something was written; the domain never commits. Entry points
translate their input into a command, and the outcome back into their transport. Concurrent
stage changes of one tenant share one unit of work (customer360.batching).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

import asyncpg
import orjson
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from customer360.auth.ratelimit import RATE_LIMIT_UNAVAILABLE, RATE_LIMITED, Reservation
from customer360.batching import Batches, CommitFailed, Outcomes
from customer360.data import export, privacy, webhooks
from customer360.data.keys import TenantErased, keys_of
from customer360.data.statements import StatementSpan
from customer360.data.uow import CommitHook, DriverUnitOfWork, SqlUnitOfWork
from customer360.events.handlers import EventRejected, Outcome, handle, parse_event
from customer360.events.signing import TargetPolicy, TargetRefused, new_secret
from customer360.lifecycle import (
    ChangeResult,
    ChangeStage,
    Code,
    ConfigProposal,
    DomainError,
    StageConfig,
    change_stages,
    configure_stages,
    utcnow,
)
from customer360.lifecycle.service import Clock
from customer360.observability import REJECTED
from customer360.tracing import outbox_trace_context

__all__ = [
    "BackendUnavailable",
    "EventRejected",
    "Limiter",
    "Outcome",
    "TargetRefused",
    "Updated",
    "UseCases",
]


P = ParamSpec("P")
T = TypeVar("T")


class BackendUnavailable(Exception):
    """PostgreSQL could not be reached (restarting, failing over): the event is fine and
    must be applied later, never dead-lettered for it."""


class Limiter(Protocol):
    """A principal's hourly budget of stage changes (auth.ratelimit)."""

    async def reserve(self, tenant: str, subject: str, n: int) -> Reservation: ...

    async def release(self, tenant: str, subject: str, ids: Sequence[str]) -> None: ...


@dataclass(frozen=True, slots=True)
class Updated:
    """One outcome per command, in order; when some were refused for the budget,
    `retry_after` says in how many seconds a slot frees."""

    outcomes: list[ChangeResult | DomainError]
    retry_after: int = 0


class UseCases:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        limiter: Limiter | None = None,
        on_commit: CommitHook | None = None,
        on_history: Callable[[], None] | None = None,
        clock: Clock = utcnow,
        webhook_policy: TargetPolicy | None = None,
        statement_span: StatementSpan | None = None,
        write_batches: int = 2,
    ) -> None:
        self._engine = engine
        # Where webhooks may point (https:// and public addresses, unless development says).
        self.webhook_policy = webhook_policy or TargetPolicy()
        self._limiter = limiter
        self._on_commit = on_commit
        # History waits to be sealed: the sealer is woken (events/sealer.py).
        self._on_history = on_history
        self._clock = clock
        # asyncpg's own pool (data/db.driver_pool), set by the app once open: stage changes
        # then run on it. Without one (the CLI, tools) they run on the engine.
        self.pool: asyncpg.Pool | None = None
        self._statement_span = statement_span
        # Concurrent requests' stage changes share transactions (customer360.batching).
        self._batches = Batches(self._write, in_flight=write_batches)
        self._settling: set[asyncio.Task[None]] = set()

    async def _read(
        self,
        read: Callable[Concatenate[AsyncConnection, P], Awaitable[T]],
        *args: P.args,
        **kw: P.kwargs,
    ) -> T:
        """A read on a connection of its own, shielded: a query's sibling field that fails
        cancels the others (the compiled path), and a connection cancelled halfway through a
        statement may go back to the pool inside its transaction. The read finishes, and
        returns its connection cleanly, whoever stopped waiting for it."""

        async def run() -> T:
            async with self._engine.connect() as conn:
                return await read(conn, *args, **kw)

        return await asyncio.shield(run())

    def _uow(self) -> SqlUnitOfWork:
        return SqlUnitOfWork(self._engine, on_commit=self._on_commit, on_history=self._on_history)

    def _driver_uow(self, pool: asyncpg.Pool) -> DriverUnitOfWork:
        return DriverUnitOfWork(
            pool,
            on_commit=self._on_commit,
            on_history=self._on_history,
            span=self._statement_span,
        )

    async def update_stages(self, commands: Sequence[ChangeStage]) -> Updated:
        """One principal's stage changes, under its hourly budget.

        Commands past the budget may only replay (their idempotency key's first result);
        slots of what was refused or replayed are handed back, so only accepted changes count.
        """
        if not commands:
            return Updated([])
        if self._limiter is None:
            raise RuntimeError("stage changes need a rate limiter")
        tenant, actor = commands[0].tenant_id, commands[0].actor
        reservation = await self._limiter.reserve(tenant, actor, len(commands))
        granted = len(reservation.ids)
        origin = outbox_trace_context()
        runs = [
            c
            if i < granted and origin is None
            else replace(c, replay_only=i >= granted, origin=origin)
            for i, c in enumerate(commands)
        ]
        written = self._batches.submit(runs)
        try:
            outcomes = await asyncio.shield(written)
        except asyncio.CancelledError:
            # The batch is written all the same: its slots are settled when it ends, so a
            # request given up on still counts what it changed.
            written.add_done_callback(
                lambda _: self._settle_later(tenant, actor, reservation, written)
            )
            raise
        except BaseException:
            await self._limiter.release(tenant, actor, reservation.ids)
            raise
        return await self._settle(tenant, actor, reservation, outcomes)

    async def _write(self, commands: Sequence[ChangeStage]) -> Outcomes:
        """One batch of stage changes (customer360.batching), in one unit of work."""
        uow = self._uow() if self.pool is None else self._driver_uow(self.pool)
        async with uow:
            outcomes = await change_stages(uow.lifecycle, commands, self._clock)
            if uow.lifecycle.written:
                try:
                    await uow.commit()
                except Exception as exc:
                    raise CommitFailed from exc
        return outcomes

    async def _settle(
        self, tenant: str, actor: str, reservation: Reservation, outcomes: Outcomes
    ) -> Updated:
        """Hand back the slots of what was refused or replayed: only accepted changes count."""
        assert self._limiter is not None
        unused = [
            rid
            for rid, outcome in zip(reservation.ids, outcomes, strict=False)
            if isinstance(outcome, DomainError) or outcome.replayed
        ]
        await self._limiter.release(tenant, actor, unused)
        refused = sum(isinstance(o, DomainError) and o.code is Code.RATE_LIMITED for o in outcomes)
        if refused:
            reason = RATE_LIMIT_UNAVAILABLE if reservation.unavailable else RATE_LIMITED
            REJECTED.labels(reason).inc(refused)
        return Updated(outcomes, reservation.retry_after)

    def _settle_later(
        self, tenant: str, actor: str, reservation: Reservation, written: asyncio.Future[Outcomes]
    ) -> None:
        async def settle() -> None:
            assert self._limiter is not None
            if written.cancelled() or written.exception() is not None:
                await self._limiter.release(tenant, actor, reservation.ids)
            else:
                await self._settle(tenant, actor, reservation, written.result())

        task = asyncio.get_running_loop().create_task(settle())
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def configure_stages(
        self,
        tenant_id: str,
        actor: str,
        proposal: ConfigProposal,
        expected_version: int | None = None,
    ) -> StageConfig:
        """Save a tenant's stage configuration as its next version; raises DomainError."""
        async with self._uow() as uow:
            saved = await configure_stages(
                uow.lifecycle, tenant_id, actor, proposal, expected_version, self._clock
            )
            await uow.commit()
        return saved

    async def apply_event(
        self, event: bytes | str | Mapping[str, Any], *, topic: str | None = None
    ) -> Outcome:
        """One CloudEvent (JSON text, or already parsed), as the Kafka consumers and
        `c360 ingest` receive it. Raises EventRejected, with the reason a dead letter or
        `c360 ingest` reports, when it cannot be parsed or applied; nothing of it is kept."""
        if isinstance(event, bytes | str):
            try:
                event = orjson.loads(event)
            except orjson.JSONDecodeError as exc:
                raise EventRejected(f"not JSON: {exc}") from None
        if topic is not None and isinstance(event, Mapping) and event.get("type") != topic:
            raise EventRejected(f"type {event.get('type')!r} does not match the topic")
        parsed = parse_event(event)
        try:
            async with self._uow() as uow:
                outcome = await handle(uow, parsed, self._clock)
                if outcome is Outcome.APPLIED:
                    await uow.commit()
        except TenantErased as exc:
            # An erased tenant's events are refused like any other bad event, never retried.
            raise EventRejected(str(exc)) from None
        except (DataError, IntegrityError) as exc:
            # The database refused this event's values; its transaction rolled back.
            raise EventRejected(f"not storable: {type(exc.orig).__name__}") from None
        except (OperationalError, InterfaceError, OSError) as exc:
            raise BackendUnavailable(type(exc).__name__) from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise BackendUnavailable(type(exc).__name__) from exc
            raise
        return outcome

    async def erase(self, tenant_id: str, customer_id: uuid.UUID | None) -> int:
        """Erase one customer's personal data, or a whole tenant's (its data key destroyed);
        returns how many customers."""
        async with self._uow() as uow:
            n = await privacy.erase(uow.connection, tenant_id, customer_id)
            await uow.commit()
        keys_of(self._engine).forget(tenant_id)  # this process's copy of a destroyed key
        return n

    async def export_customer(
        self, tenant_id: str, customer_id: uuid.UUID, actor: str, channel: str
    ) -> export.CustomerExport | None:
        """Everything held about one customer (GDPR art. 15/20), the export recorded in the
        same transaction; None, and nothing recorded, when the tenant has no such customer."""
        async with self._uow() as uow:
            found = await export.export_customer(
                uow.connection, tenant_id, customer_id, actor, channel, self._clock()
            )
            if found is not None:
                await uow.commit()
        return found

    async def data_exports(
        self, tenant_id: str, customer_id: uuid.UUID | None = None, limit: int = 50
    ) -> list[export.ExportRecord]:
        """The tenant's recorded exports, newest first."""
        return await self._read(export.list_exports, tenant_id, customer_id, limit)

    def _webhook_fields(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Checked endpoint fields; raises TargetRefused or ValueError (the message says why)."""
        out = dict(fields)
        if "url" in out:
            self.webhook_policy.check_url(out["url"])
        unknown = set(out.get("event_types") or ()) - set(webhooks.EVENT_TYPES)
        if unknown:
            raise ValueError(
                f"unknown event types {sorted(unknown)}; known: {webhooks.EVENT_TYPES}"
            )
        return out

    async def create_webhook(
        self, tenant_id: str, actor: str, fields: Mapping[str, Any]
    ) -> tuple[webhooks.Endpoint, str]:
        """A new endpoint and its secret, which is shown this once."""
        checked = self._webhook_fields(fields)
        secret = new_secret()
        async with self._uow() as uow:
            endpoint = await webhooks.create_endpoint(
                uow.connection, tenant_id, actor, checked, secret, self._clock()
            )
            await uow.commit()
        return endpoint, secret

    async def update_webhook(
        self, tenant_id: str, endpoint_id: uuid.UUID, fields: Mapping[str, Any]
    ) -> webhooks.Endpoint | None:
        checked = self._webhook_fields(fields)
        async with self._uow() as uow:
            endpoint = await webhooks.update_endpoint(
                uow.connection, tenant_id, endpoint_id, checked, self._clock()
            )
            if endpoint is not None:
                await uow.commit()
        return endpoint

    async def rotate_webhook_secret(
        self, tenant_id: str, endpoint_id: uuid.UUID
    ) -> tuple[webhooks.Endpoint, str] | None:
        secret = new_secret()
        async with self._uow() as uow:
            endpoint = await webhooks.rotate_secret(
                uow.connection, tenant_id, endpoint_id, secret, self._clock()
            )
            if endpoint is None:
                return None
            await uow.commit()
        return endpoint, secret

    async def delete_webhook(self, tenant_id: str, endpoint_id: uuid.UUID) -> bool:
        async with self._uow() as uow:
            gone = await webhooks.delete_endpoint(uow.connection, tenant_id, endpoint_id)
            if gone:
                await uow.commit()
        return gone

    async def replay_webhook_delivery(
        self, tenant_id: str, delivery_id: uuid.UUID
    ) -> webhooks.Delivery | None:
        async with self._uow() as uow:
            found = await webhooks.replay_delivery(
                uow.connection, tenant_id, delivery_id, self._clock()
            )
            if found is not None:
                await uow.commit()
        return found

    async def webhook_endpoints(
        self, tenant_id: str, endpoint_id: uuid.UUID | None = None
    ) -> list[webhooks.Endpoint]:
        return await self._read(webhooks.list_endpoints, tenant_id, endpoint_id)

    async def webhook_deliveries(
        self, tenant_id: str, endpoint_id: uuid.UUID, status: str | None, limit: int
    ) -> list[webhooks.Delivery]:
        return await self._read(webhooks.list_deliveries, tenant_id, endpoint_id, status, limit)

    async def seal_plaintext(self) -> int:
        """Seal personal data stored before encryption; one short transaction per batch, so
        it runs online. Returns how many customers were sealed."""
        return await privacy.seal_plaintext(self._engine)

    async def rotate_keys(self) -> int:
        """Re-wrap every tenant's data key with the primary master key, online."""
        return await keys_of(self._engine).rotate(self._engine)
