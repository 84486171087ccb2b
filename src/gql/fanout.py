"""Shared execution for identical live subscriptions.

Sockets subscribed with the same document and variables, in the same tenant and with the
same permissions, receive the same results; executing the selection set once per socket for
every event made one event cost about a millisecond per socket. A group runs one strawberry
subscription and hands each result to every member's bounded queue; strawberry still frames
and writes each socket. Subscriptions that resume with `after` replay their own history and
stay on the per-socket path.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
from graphql import (
    FieldNode,
    NullValueNode,
    OperationDefinitionNode,
    OperationType,
    VariableNode,
    parse,
)
from graphql.error import GraphQLSyntaxError

from customer360.observability import SUBSCRIPTION_GROUPS, SUBSCRIPTIONS, get_logger

from .context import Context

log = get_logger("customer360.fanout")
MEMBER_QUEUE = 256
CLOSE_TRY_AGAIN = 1013
FIELD = "lifecycleChanged"
_END, _SLOW, _FAILED = object(), object(), object()
GroupKey = tuple[str, frozenset[str], str, str, str | None]
Source = Callable[[], Awaitable[AsyncGenerator[Any, None]]]


async def _spent() -> AsyncGenerator[Any, None]:
    raise RuntimeError("a member never starts its group's source")


@functools.lru_cache(maxsize=512)
def _shareable(query: str, operation_name: str | None) -> tuple[bool, str | None]:
    """Whether the document is one `lifecycleChanged` root field that every member would see
    alike, and the variable that carries its `after`, if one does (a literal `after` is not
    shareable: it asks for a replay of its own)."""
    try:
        doc = parse(query)
    except GraphQLSyntaxError:
        return False, None
    ops = [d for d in doc.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        ops = [o for o in ops if o.name is not None and o.name.value == operation_name]
    if len(ops) != 1 or ops[0].operation is not OperationType.SUBSCRIPTION:
        return False, None
    fields = ops[0].selection_set.selections
    if len(fields) != 1 or not isinstance(fields[0], FieldNode):
        return False, None
    root = fields[0]
    if root.name.value != FIELD:
        return False, None
    after = next((a for a in root.arguments or () if a.name.value == "after"), None)
    if after is None:
        return True, None
    if isinstance(after.value, VariableNode):
        return True, after.value.name.value
    return isinstance(after.value, NullValueNode), None


def group_key(
    query: str | None, variables: dict[str, Any] | None, operation_name: str | None, ctx: Any
) -> GroupKey | None:
    if not isinstance(ctx, Context) or ctx.websocket is None or ctx._principal is None:
        return None
    if query is None:
        return None
    ok, after_variable = _shareable(query, operation_name)
    if not ok or (after_variable is not None and (variables or {}).get(after_variable)):
        return None
    p = ctx._principal
    perms = frozenset(str(x) for x in p.permissions)
    return (
        p.tenant_id,
        perms,
        query,
        # Decoded: orjson's bytes keep a 4 KB buffer, and every member's frame holds its key.
        orjson.dumps(variables or {}, option=orjson.OPT_SORT_KEYS).decode(),
        operation_name,
    )


class _Inbox:
    """A member's bounded queue. Not asyncio.Queue: its three deques cost about 2 KB per idle
    socket; a list and one future at a time cost a few hundred bytes."""

    __slots__ = ("items", "waiter")

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.waiter: asyncio.Future[None] | None = None

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def put(self, item: Any) -> bool:
        """False when full: the member cannot keep up."""
        if len(self.items) >= MEMBER_QUEUE:
            return False
        self.items.append(item)
        self._wake()
        return True

    def end(self, item: object) -> None:
        """A last word, delivered even when full."""
        self.items.append(item)
        self._wake()

    async def get(self) -> Any:
        while not self.items:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.items.pop(0)


@dataclass(eq=False)
class _Group:
    key: GroupKey
    members: set[_Inbox] = field(default_factory=set)
    task: asyncio.Task[None] | None = None


class Fanout:
    def __init__(self) -> None:
        self.groups: dict[GroupKey, _Group] = {}

    def shared_context(self, ctx: Context) -> Context:
        """The group's own context: no socket, and a principal whose expiry is each member's
        own business (every socket is closed at its own token's expiry)."""
        assert ctx._principal is not None
        forever = replace(ctx._principal, expires_at=2**62)
        return Context(reads=ctx.reads, usecases=ctx.usecases, hub=ctx.hub, _principal=forever)

    async def member(
        self, key: GroupKey, source: Source, close: Callable[[int, str], Awaitable[None]]
    ) -> AsyncGenerator[Any, None]:
        group = self.groups.get(key)
        if group is None:
            group = self.groups[key] = _Group(key)
            group.task = asyncio.create_task(self._run(key, group, source))
            SUBSCRIPTION_GROUPS.inc()
        # This frame lives as long as the socket: keep the group's key and nothing of the
        # caller's (its key tuple, its source closure).
        key, source = group.key, _spent
        queue = _Inbox()
        group.members.add(queue)
        SUBSCRIPTIONS.inc()
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if item is _SLOW:
                    # Close, not complete: a graphql-ws client reconnects after a close.
                    await close(4408, "Subscriber too slow")
                    return
                if item is _FAILED:
                    # 1013 (try again later): graphql-ws clients reconnect after it, and
                    # resume with `after`; 1011 they take as fatal and stop for good.
                    await close(CLOSE_TRY_AGAIN, "Live updates failed; reconnect")
                    return
                yield item
        finally:
            SUBSCRIPTIONS.dec()
            group.members.discard(queue)
            if not group.members:
                # Gone from the registry at once: a newcomer starts a fresh group rather than
                # joining one that is being torn down.
                if self.groups.get(key) is group:
                    del self.groups[key]
                if group.task is not None:
                    group.task.cancel()

    async def _run(self, key: GroupKey, group: _Group, source: Source) -> None:
        ending = _END
        try:
            results = await source()
            source = _spent  # its closure holds the first member's context: let it go
            async with contextlib.aclosing(results):
                async for result in results:
                    for queue in list(group.members):
                        if not queue.put(result):
                            # A socket that cannot keep up is let go, not buffered forever.
                            group.members.discard(queue)
                            queue.end(_SLOW)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("subscription group failed", error=type(exc).__name__)
            ending = _FAILED
        finally:
            if self.groups.get(key) is group:
                del self.groups[key]
            SUBSCRIPTION_GROUPS.dec()
            for queue in list(group.members):
                queue.end(ending)
