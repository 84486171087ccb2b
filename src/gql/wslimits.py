"""WebSocket abuse limits: operations per socket, sockets per principal, a short wait for
`connection_init`, and refusals that close with the protocol's codes on both subprotocols."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from contextlib import suppress
from datetime import timedelta

from graphql import GraphQLError
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    ConnectionInitMessage,
    SubscribeMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.subscriptions.protocols.graphql_ws.types import (
    ConnectionInitMessage as LegacyInitMessage,
)
from strawberry.subscriptions.protocols.graphql_ws.types import StartMessage

from customer360.lifecycle import Code
from customer360.observability import REJECTED

from .context import Context

# Close codes of graphql-transport-ws, used for the legacy protocol too so that one client
# rule ("4403: get a new token", "4429: too many") holds whatever the subprotocol.
CLOSE_FORBIDDEN = 4403
CLOSE_INIT_TIMEOUT = 4408
CLOSE_TOO_MANY = 4429

# Bounded values of c360_requests_rejected_total{reason}.
REJECT_INIT_TIMEOUT = "ws_init_timeout"
REJECT_TOO_MANY_SOCKETS = "ws_too_many_sockets"
REJECT_TOO_MANY_OPERATIONS = "ws_too_many_subscriptions"
REJECT_REINIT = "ws_reinit"


class SocketRefused(Exception):
    """Raised from `on_ws_connect`; the handlers close with `code`. Not a strawberry
    ConnectionRejectionError: strawberry would close that with 4403 (1011 on graphql-ws)."""

    def __init__(self, code: int, reason: str, metric: str) -> None:
        super().__init__(reason)
        self.code, self.reason, self.metric = code, reason, metric


def too_many_operations(limit: int) -> GraphQLError:
    # BAD_USER_INPUT, not RATE_LIMITED: the contract's RATE_LIMITED is an hourly budget that
    # waiting refills, while here waiting changes nothing; the client asked for more at once
    # than one socket carries and must complete an operation first, like TOO_MANY_ITEMS for a
    # bulk input. The reason is new; the contract allows additions.
    return GraphQLError(
        f"At most {limit} active operations per socket; complete one first",
        extensions={"code": Code.BAD_USER_INPUT.value, "reason": "TOO_MANY_SUBSCRIPTIONS"},
    )


def over_the_limit(
    acknowledged: bool, op_id: str, active: Mapping[str, object], limit: int | None
) -> GraphQLError | None:
    """The refusal of one more operation on a socket already carrying `limit` (counted),
    or None. A repeated id or an unacknowledged socket is left to strawberry, which closes."""
    if not acknowledged or op_id in active or limit is None or len(active) < limit:
        return None
    REJECTED.labels(REJECT_TOO_MANY_OPERATIONS).inc()
    return too_many_operations(limit)


# This process's authenticated sockets, for checks that reach all of them (withdrawn keys).
OPEN_SOCKETS: dict[int, Context] = {}


def _release_slot(context: Context) -> None:
    """The socket is done: its budget slot and its expiry timer go."""
    OPEN_SOCKETS.pop(id(context), None)
    if context.socket_slot is not None:
        context.socket_slot.release()
    if context.expiry is not None:
        context.expiry.cancel()
        context.expiry = None


class TransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    """graphql-transport-ws with our refusals and limits."""

    async def handle(self) -> None:
        try:
            await super().handle()
        finally:
            _release_slot(self.context)

    async def handle_connection_init_timeout(self) -> None:
        await super().handle_connection_init_timeout()
        if self.connection_timed_out:
            REJECTED.labels(REJECT_INIT_TIMEOUT).inc()

    async def handle_connection_init(self, message: ConnectionInitMessage) -> None:
        try:
            await super().handle_connection_init(message)
        except SocketRefused as refused:
            REJECTED.labels(refused.metric).inc()
            await self.websocket.close(refused.code, refused.reason)

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        # strawberry's own check would answer an error without `extensions.code`; ours runs
        # first on the same condition (its order: unacknowledged and duplicate ids close).
        error = over_the_limit(
            self.connection_acknowledged,
            message["id"],
            self.operations,
            self.max_subscriptions_per_connection,
        )
        if error is not None:
            await self.send_message(
                {"id": message["id"], "type": "error", "payload": [error.formatted]}
            )
            return
        await super().handle_subscribe(message)


class LegacyWSHandler(BaseGraphQLWSHandler[Context, None]):
    """graphql-ws (C360_WS_LEGACY=1) under the same rules: strawberry gives this protocol no
    connection_init timeout and closes refusals with 1011."""

    _initialised = False
    _timed_out = False

    async def handle(self) -> None:
        timer = asyncio.create_task(self._close_unless_initialised())
        try:
            await super().handle()
        finally:
            timer.cancel()
            with suppress(asyncio.CancelledError):
                await timer
            _release_slot(self.context)

    async def _close_unless_initialised(self) -> None:
        wait: timedelta = self.view.connection_init_wait_timeout
        await asyncio.sleep(wait.total_seconds())
        if not self._initialised:
            self._timed_out = True
            REJECTED.labels(REJECT_INIT_TIMEOUT).inc()
            with suppress(Exception):
                await self.websocket.close(CLOSE_INIT_TIMEOUT, "Connection initialisation timeout")

    async def handle_connection_init(self, message: LegacyInitMessage) -> None:
        if self._timed_out:
            return
        self._initialised = True
        try:
            await super().handle_connection_init(message)
        except SocketRefused as refused:
            REJECTED.labels(refused.metric).inc()
            await self.send_message(
                {"type": "connection_error", "payload": {"message": refused.reason}}
            )
            await self.websocket.close(refused.code, refused.reason)

    async def handle_start(self, message: StartMessage) -> None:
        error = over_the_limit(
            self.connection_acknowledged,
            message["id"],
            self.tasks,
            self.max_subscriptions_per_connection,
        )
        if error is not None:
            await self.send_message(
                {"type": "error", "id": message["id"], "payload": error.formatted}
            )
            return
        await super().handle_start(message)
