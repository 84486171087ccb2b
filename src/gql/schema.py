"""The strawberry schema, assembled from the domain modules."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import strawberry
from graphql import (
    ASTValidationRule,
    DocumentNode,
    GraphQLError,
    NoSchemaIntrospectionCustomRule,
    specified_rules,
)
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    SchemaExtension,
    ValidationCache,
)
from strawberry.schema.schema import validate_document
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType

from customer360.observability import get_logger

from .context import Context
from .customers import CustomerQuery
from .errors import should_mask
from .export import ExportMutation, ExportQuery
from .fanout import Fanout, group_key
from .lifecycle import LifecycleMutation
from .limits import CodedMaskErrors, HideSuggestions, depth_limit
from .stage_config import StageConfigMutation, StageConfigQuery
from .subscriptions import PositionQuery, Subscription
from .webhooks import WebhookMutation, WebhookQuery

log = get_logger("customer360.graphql")
MAX_DEPTH = 15
MAX_ALIASES = 15
MAX_TOKENS = 2000


@strawberry.type
class Query(CustomerQuery, StageConfigQuery, PositionQuery, ExportQuery, WebhookQuery):
    pass


@strawberry.type
class Mutation(LifecycleMutation, StageConfigMutation, ExportMutation, WebhookMutation):
    pass


class RenewSocketState(SchemaExtension):
    """A WebSocket keeps one context; each operation on it starts with fresh caches."""

    def on_operation(self) -> Iterator[None]:
        context = self.execution_context.context
        if isinstance(context, Context) and context.websocket is not None:
            context.renew()
        yield


class Schema(strawberry.Schema):
    """strawberry's schema, with identical live subscriptions sharing one execution."""

    def __init__(
        self, *args: Any, validation_rules: Sequence[type[ASTValidationRule]] = (), **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fanout = Fanout()
        # What a document must pass before execution, as strawberry runs it (the compiled
        # path validates with the very same rules).
        self.validation_rules = (*specified_rules, *validation_rules)

    def validate(self, document: DocumentNode) -> list[GraphQLError]:
        return validate_document(self._schema, document, self.validation_rules)

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # strawberry logs every error with the document excerpt, and so its literal values (a
        # searched email, say). Expected errors (validation, NOT_FOUND, CONFLICT...) are
        # answers, not incidents; only what gets masked is logged, without the document.
        for error in errors:
            if should_mask(error):
                log.error(
                    "unexpected error",
                    path=error.path,
                    error=type(error.original_error).__name__,
                    exc_info=error.original_error,
                )

    async def execute(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        # Only HTTP executes here (WebSocket operations go through `stream`): a subscription
        # has no single answer to give, so it is refused before execution (view.py says
        # where subscriptions are served) instead of failing inside graphql-core.
        allowed = set(allowed_operation_types or OperationType)
        allowed.discard(OperationType.SUBSCRIPTION)
        return await super().execute(
            query,
            variable_values,
            context_value,
            root_value,
            operation_name,
            allowed,
            operation_extensions,
        )

    async def stream(
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        operation_extensions: dict[str, Any] | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
    ) -> Any:
        key = group_key(query, variable_values, operation_name, context_value)
        if key is None:
            return await super().stream(
                query,
                variable_values,
                context_value,
                root_value,
                operation_name,
                operation_extensions,
                allowed_operation_types,
            )
        assert isinstance(context_value, Context)

        async def source() -> Any:
            # Built when the group starts, not for every member that joins it.
            shared = self.fanout.shared_context(context_value)
            return await strawberry.Schema.stream(
                self,
                query,
                variable_values,
                shared,
                root_value,
                operation_name,
                operation_extensions,
                allowed_operation_types,
            )

        return self.fanout.member(key, source, context_value.close_socket)


def build_schema(*, introspection: bool = True, suggestions: bool = True) -> Schema:
    # The rule classes are made once: the validation cache is keyed by them, so new classes
    # per request would make every request a cache miss.
    rules: list[type[ASTValidationRule]] = [
        depth_limit(MAX_DEPTH),
        *MaxAliasesLimiter(max_alias_count=MAX_ALIASES).validation_rules,
    ]
    if not introspection:
        rules.append(NoSchemaIntrospectionCustomRule)
    extensions: list[Callable[[], SchemaExtension]] = [
        lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
        lambda: AddValidationRules(rules),
        lambda: ParserCache(maxsize=1024),
        lambda: ValidationCache(maxsize=1024),
        CodedMaskErrors,
        RenewSocketState,
    ]
    if not suggestions:
        extensions.append(HideSuggestions)
    return Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        validation_rules=rules,
    )
