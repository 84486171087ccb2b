"""Document limits and error masking the contract asks for (CONTRACT section 4)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationRule,
)
from strawberry.extensions import MaskErrors, SchemaExtension

from .errors import should_mask

# 1 MiB: an HTTP request body (413 above) and a WebSocket message (closed with 1009 above).
MAX_REQUEST_BYTES = 1024 * 1024
# The close code of a WebSocket message over the limit (RFC 6455 "message too big").
CLOSE_TOO_BIG = 1009


def depth_limit(max_depth: int) -> type[ValidationRule]:
    """Depth with the root field at 1, leaf fields and introspection fields counted.

    strawberry's QueryDepthLimiter skips `__`-prefixed fields, which lets an introspection
    document nest without bound; this rule counts every field.
    """

    class DepthLimit(ValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            fragments = {
                d.name.value: d
                for d in self.context.document.definitions
                if isinstance(d, FragmentDefinitionNode)
            }
            depth = _depth(node.selection_set, fragments, {}, frozenset())
            if depth > max_depth:
                self.report_error(
                    GraphQLError(f"Query depth {depth} is over the limit of {max_depth}", node)
                )

    return DepthLimit


def _depth(
    selections: SelectionSetNode | None,
    fragments: dict[str, FragmentDefinitionNode],
    memo: dict[str, int],
    visiting: frozenset[str],
) -> int:
    """Depth below this selection set; fragments are measured once (no blow-up on reuse)."""
    if selections is None:
        return 0
    best = 0
    for sel in selections.selections:
        if isinstance(sel, FieldNode):
            best = max(best, 1 + _depth(sel.selection_set, fragments, memo, visiting))
        elif isinstance(sel, InlineFragmentNode):
            best = max(best, _depth(sel.selection_set, fragments, memo, visiting))
        elif isinstance(sel, FragmentSpreadNode):
            name = sel.name.value
            if name in visiting or name not in fragments:
                continue  # cycles and unknown fragments are other rules' errors
            if name not in memo:
                memo[name] = _depth(
                    fragments[name].selection_set, fragments, memo, visiting | {name}
                )
            best = max(best, memo[name])
    return best


_SUGGESTION = re.compile(r" Did you mean .*\?$")


class HideSuggestions(SchemaExtension):
    """Drops graphql-core's "Did you mean ...?" hints, which spell out the schema even when
    introspection is off (production)."""

    def on_validate(self) -> Iterator[None]:
        yield
        for error in self.execution_context.pre_execution_errors or ():
            error.message = _SUGGESTION.sub("", error.message)


class CodedMaskErrors(MaskErrors):
    """Masks unexpected errors and still gives them the contract's code."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=should_mask, error_message="Internal server error")

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        masked = super().anonymise_error(error)
        masked.extensions = {"code": "INTERNAL_SERVER_ERROR"}
        return masked
