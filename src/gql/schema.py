"""The strawberry schema, assembled from the domain modules."""

from __future__ import annotations

from collections.abc import Callable

import strawberry
from strawberry.extensions import (
    DisableIntrospection,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)

from .customers import CustomerQuery
from .errors import should_mask
from .lifecycle import LifecycleMutation
from .stage_config import StageConfigMutation, StageConfigQuery

MAX_DEPTH = 15
MAX_ALIASES = 15
MAX_TOKENS = 2000


@strawberry.type
class Query(CustomerQuery, StageConfigQuery):
    pass


@strawberry.type
class Mutation(LifecycleMutation, StageConfigMutation):
    pass


def _mask() -> MaskErrors:
    return MaskErrors(
        should_mask_error=should_mask,
        error_message="Internal server error",
    )


def build_schema(*, introspection: bool = True) -> strawberry.Schema:
    extensions: list[Callable[[], SchemaExtension]] = [
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
        # A root field is depth 1 in the contract; the limiter counts it as 0.
        lambda: QueryDepthLimiter(max_depth=MAX_DEPTH - 1),
        lambda: MaxAliasesLimiter(max_alias_count=MAX_ALIASES),
        lambda: ParserCache(maxsize=1024),
        lambda: ValidationCache(maxsize=1024),
        _mask,
    ]
    if not introspection:
        extensions.append(DisableIntrospection)
    return strawberry.Schema(query=Query, mutation=Mutation, extensions=extensions)
