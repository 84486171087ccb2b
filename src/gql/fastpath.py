"""Compiled operations, part three: which requests take the compiled path, and the proof
that it answers as strawberry does.

Modes (`C360_GRAPHQL_COMPILED`): `on` answers what it can and leaves the rest to strawberry;
`off` leaves everything to strawberry; `verify` answers with the compiled path and also
runs strawberry on the same request with the same clock, recording every difference (the
test suite runs in this mode, so every document it sends is a differential test).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from graphql import OperationType
from prometheus_client import Counter

from customer360.data.queries import ColumnNotRead
from customer360.observability import REGISTRY, Children

from .compiled import Compiler, Info, Run, Unsupported, execute, execute_serially
from .context import Context
from .plan import Planner
from .schema import MAX_TOKENS, Schema

log = logging.getLogger("customer360.graphql.compiled")

Mode = Literal["on", "off", "verify"]

COMPILED = Counter(
    "c360_graphql_compiled_total",
    "GraphQL requests by who answered: the compiled path or strawberry",
    ["path"],
    registry=REGISTRY,
)
COMPILED_BY = Children(COMPILED)


@dataclass(frozen=True, slots=True)
class Mismatch:
    query: str
    variables: Any
    compiled: bytes
    reference: bytes


# Every process's record of differences, for whoever verifies (the test suite).
MISMATCHES: list[Mismatch] = []
# Queries whose compiled run read a column its selection's declarations left out
# (projection.py): answered right, by strawberry, but a declaration to mend.
SHORT_READS: list[str] = []


@dataclass
class FastPath:
    schema: Schema
    mode: Mode = "on"
    # The operation's span when tracing is on (otel.Tracing.compiled_operation): its kind
    # ("query", "mutation") and name.
    span: Callable[[str, str | None], AbstractContextManager[None]] | None = None

    def __post_init__(self) -> None:
        self.planner = Planner(self.schema._schema, self.schema.validate, max_tokens=MAX_TOKENS)
        self.compiler = Compiler(self.schema)

    async def answer(self, body: object, context: Context) -> bytes | None:
        """The response body for a plain JSON request, or None: strawberry answers it."""
        if self.mode == "off":
            return None
        data = await self._data(body, context)
        if data is None:
            COMPILED_BY("strawberry").inc()
            return None
        COMPILED_BY("compiled").inc()
        return orjson.dumps({"data": data})

    async def _data(self, body: object, context: Context) -> dict[str, Any] | None:
        if not isinstance(body, dict):
            return None
        query, variables = body.get("query"), body.get("variables")
        operation_name = body.get("operationName")
        if (
            not isinstance(query, str)
            or not (variables is None or isinstance(variables, dict))
            or not (operation_name is None or isinstance(operation_name, str))
            or body.get("extensions")  # persisted queries and the like: strawberry's
        ):
            return None
        doc = self.planner.document(query, operation_name)  # None: invalid, or not a query
        if doc is None:
            return None
        coerced = self.planner.variables(doc, variables or {})
        if coerced is None:
            return None
        tree = self.planner.tree(doc, coerced)
        steps = self.compiler.steps(doc.root, tree, doc.compiled)
        if steps is None:
            return None
        name = doc.operation.name.value if doc.operation.name else None
        kind = doc.operation.operation
        run = Run(Info(context), coerced)
        try:
            with self.span(kind.value, name) if self.span else nullcontext():
                if kind is OperationType.MUTATION:
                    return await execute_serially(steps, run)
                return await execute(steps, None, run)
        except Exception as failed:  # strawberry runs it again and reports it as it does
            if _short_read(failed):
                # the document's fingerprint, not its text: literals in it may be personal
                digest = hashlib.sha256(query.encode()).hexdigest()[:16]
                log.warning("a field read a column it does not declare (document %s)", digest)
                if self.mode == "verify":
                    SHORT_READS.append(query)
            elif not isinstance(failed, Unsupported):
                log.debug("compiled execution failed", exc_info=True)
            return None

    def _mutation(self, body: dict[str, Any]) -> bool:
        query, name = body.get("query"), body.get("operationName")
        assert isinstance(query, str) and (name is None or isinstance(name, str))
        doc = self.planner.document(query, name)  # held since the compiled run
        return doc is not None and doc.operation.operation is OperationType.MUTATION

    async def verify(
        self,
        body: object,
        compiled: bytes,
        reference: Callable[[], Awaitable[bytes]],
        again: Callable[[], Awaitable[bytes | None]],
    ) -> None:
        """Record a difference; for a query, a second pair of runs that agrees was a
        concurrent write landing between the two, not a defect. A mutation's two answers
        come from one kept outcome (once.py): any difference is a defect, and a second pair
        would hide a resolver that ran twice."""
        theirs = await reference()
        if theirs == compiled:
            return
        assert isinstance(body, dict)
        if not self._mutation(body):
            ours_again = await again()
            theirs_again = await reference()
            if ours_again == theirs_again:
                return
        MISMATCHES.append(Mismatch(str(body.get("query")), body.get("variables"), compiled, theirs))
        log.error("compiled path disagrees with strawberry: %s", body.get("query"))


def _short_read(error: BaseException | None) -> bool:
    """A ColumnNotRead, raised here or below (as the cause of an Unsupported, or inside the
    group of a gathered list)."""
    while error is not None:
        if isinstance(error, ColumnNotRead):
            return True
        if isinstance(error, BaseExceptionGroup):
            return any(_short_read(e) for e in error.exceptions)
        error = error.__cause__ or error.__context__
    return False
