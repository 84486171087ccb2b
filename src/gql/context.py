"""Per-request context: the principal, its tenant, and one DataLoader set."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket
from strawberry.dataloader import DataLoader

from customer360.auth.principal import Permission, Principal
from customer360.data.queries import Reads, Record
from customer360.events.hub import Hub
from customer360.lifecycle import Code, StageConfig
from customer360.usecases import UseCases

from .errors import ApiError, forbidden
from .once import Outcomes

if TYPE_CHECKING:
    from customer360.auth.sockets import Slot


@dataclass
class Loaders:
    customer: DataLoader[uuid.UUID, Record | None]
    metrics: DataLoader[uuid.UUID, Record | None]
    history: DataLoader[uuid.UUID, list[Record]]
    # Customers this request has read already (a page's rows): the customer loader answers
    # them as read, without a second query. Cheaper than priming the loader row by row,
    # which makes a future per row that is almost never asked for.
    known: dict[uuid.UUID, Record]


def make_loaders(reads: Reads, tenant_id: str) -> Loaders:
    known: dict[uuid.UUID, Record] = {}

    async def customers(ids: list[uuid.UUID]) -> list[Record | None]:
        missing = [i for i in ids if i not in known]
        found = await reads.customers_by_id(tenant_id, missing) if missing else {}
        return [known[i] if i in known else found.get(i) for i in ids]

    async def metrics(ids: list[uuid.UUID]) -> list[Record | None]:
        found = await reads.metrics_by_customer(tenant_id, ids)
        return [found.get(i) for i in ids]

    async def history(ids: list[uuid.UUID]) -> list[list[Record]]:
        found = await reads.history_by_customer(tenant_id, ids)
        return [found[i] for i in ids]

    return Loaders(DataLoader(customers), DataLoader(metrics), DataLoader(history), known)


@dataclass(slots=True)
class Context:
    """What resolvers see. Over HTTP one per request; over a WebSocket one per connection,
    its principal set at `connection_init` and its caches renewed for every operation."""

    reads: Reads
    usecases: UseCases
    hub: Hub | None = None
    websocket: WebSocket | None = None
    _principal: Principal | None = None
    connection_params: dict[str, Any] | None = None
    # The socket's place in its principal's budget of open sockets, taken at connection_init.
    socket_slot: Slot | None = None
    _config: asyncio.Future[StageConfig] | None = field(default=None, repr=False)
    # Built on first use: a socket that only listens never needs any (memory per socket).
    _loaders: Loaders | None = field(default=None, repr=False)
    # The socket's close at its token's expiry (a timer, not a task per socket).
    expiry: asyncio.TimerHandle | None = field(default=None, repr=False)
    # One clock per operation: every time-derived field of an answer agrees with the others
    # (and the compiled path and strawberry give the same answer, view.py).
    clock: datetime | None = field(default=None, repr=False)
    # A POST's root mutation fields' outcomes, shared by every execution of that request
    # (once.py): a resolver that wrote is never run a second time. None on a socket.
    outcomes: Outcomes | None = field(default=None, repr=False)

    def now(self) -> datetime:
        if self.clock is None:
            self.clock = datetime.now(UTC)
        return self.clock

    @property
    def loaders(self) -> Loaders:
        if self._loaders is None:
            self._loaders = make_loaders(self.reads, self.principal.tenant_id)
        return self._loaders

    @property
    def principal(self) -> Principal:
        if self._principal is None:
            raise ApiError(Code.UNAUTHENTICATED, "Not authenticated")
        return self._principal

    def authenticate(self, principal: Principal) -> None:
        self._principal = principal
        self.renew()

    def renew(self) -> None:
        """Fresh DataLoaders and configuration: a long-lived socket must not serve old rows."""
        self._loaders = None
        self._config = None
        self.clock = None

    @property
    def live(self) -> Hub:
        if self.hub is None:
            raise ApiError(Code.INTERNAL_SERVER_ERROR, "Live updates are not running")
        return self.hub

    def check_not_expired(self) -> None:
        if self._principal is not None and self._principal.expires_at + 30 < time.time():
            raise ApiError(Code.UNAUTHENTICATED, "Token expired")

    async def close_socket(self, code: int, reason: str) -> None:
        if self.websocket is not None:
            with contextlib.suppress(Exception):
                await self.websocket.close(code=code, reason=reason)

    @property
    def tenant_id(self) -> str:
        return self.principal.tenant_id

    def require(self, permission: Permission) -> None:
        if not self.principal.can(permission):
            raise forbidden(f"Needs {permission.value}")

    async def stage_config(self) -> StageConfig:
        """The tenant's configuration, read once per request.

        Sibling resolvers ask concurrently, so the first ask's future is shared by all.
        """
        if self._config is None:
            self._config = asyncio.ensure_future(self.reads.stage_config(self.tenant_id))
        return await asyncio.shield(self._config)

    def use_config(self, config: StageConfig) -> None:
        """A configuration this request just saved is the one its later fields see."""
        future: asyncio.Future[StageConfig] = asyncio.get_running_loop().create_future()
        future.set_result(config)
        self._config = future

    def forget(self, customer_id: uuid.UUID) -> None:
        """After a write in this request, later reads must see it."""
        if self._loaders is None:
            return
        loaders = self._loaders
        for loader in (loaders.customer, loaders.metrics, loaders.history):
            # strawberry's clear() raises for keys never loaded
            with contextlib.suppress(KeyError):
                loader.clear(customer_id)
