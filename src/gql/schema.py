"""The strawberry schema, assembled from the domain modules."""

from __future__ import annotations

from collections.abc import Callable

import strawberry
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    SchemaExtension,
    ValidationCache,
)

from .customers import CustomerQuery
from .lifecycle import LifecycleMutation
from .limits import CodedMaskErrors, depth_limit
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


def build_schema(*, introspection: bool = True) -> strawberry.Schema:
    extensions: list[Callable[[], SchemaExtension]] = [
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
        lambda: AddValidationRules([depth_limit(MAX_DEPTH)]),
        lambda: MaxAliasesLimiter(max_alias_count=MAX_ALIASES),
        lambda: ParserCache(maxsize=1024),
        lambda: ValidationCache(maxsize=1024),
        CodedMaskErrors,
    ]
    if not introspection:
        extensions.append(DisableIntrospection)
    return strawberry.Schema(query=Query, mutation=Mutation, extensions=extensions)
