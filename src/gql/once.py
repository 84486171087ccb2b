"""A mutation's resolver runs at most once per request.

The compiled path (compiled.py) answers a mutation by calling its resolver itself. When it
then cannot complete the answer (an error to report, a field it does not compile),
strawberry answers the request instead, and so does it beside the compiled path in
`verify` mode. Neither may write again: each root mutation field's outcome, its value or
its exception, is kept per request under its response key, and every later ask for that
field gets it. strawberry reaches it through the `RunsOnce` field extension.

Only a POST's context carries the memo: a socket's context lives across operations, and
there every operation runs its resolvers afresh.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from strawberry.extensions import FieldExtension
from strawberry.types import Info


@dataclass(frozen=True, slots=True)
class Outcome:
    value: Any
    error: Exception | None

    def give(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


Outcomes = dict[str, Outcome]


async def remember(memo: Outcomes | None, key: str, call: Callable[[], Awaitable[Any]]) -> Any:
    """`call()`'s result, or its exception, the first time `key` is asked for in `memo`."""
    if memo is None:
        return await call()
    kept = memo.get(key)
    if kept is not None:
        return kept.give()
    try:
        value = await call()
    except Exception as error:  # a cancellation is not an outcome: the request is gone
        memo[key] = Outcome(None, error)
        raise
    memo[key] = Outcome(value, None)
    return value


class RunsOnce(FieldExtension):
    """On a root mutation field: strawberry's call gives the request's first outcome."""

    async def resolve_async(
        self, next_: Callable[..., Awaitable[Any]], source: Any, info: Info, **kwargs: Any
    ) -> Any:
        outcomes = getattr(info.context, "outcomes", None)
        key = str(info.path.key)  # a root field's response key (an index only in lists)
        return await remember(outcomes, key, lambda: next_(source, info, **kwargs))
