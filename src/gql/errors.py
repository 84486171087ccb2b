"""Expected failures as GraphQL errors with the contract's `extensions.code`."""

from __future__ import annotations

from typing import Any

from graphql import GraphQLError

from customer360.lifecycle import Code, DomainError, Reason


class ApiError(GraphQLError):
    """An expected failure: never masked, always carries `code` (and `reason`)."""

    def __init__(self, code: Code, message: str, reason: Reason | None = None, **more: Any) -> None:
        extensions: dict[str, Any] = {"code": code.value}
        if reason is not None:
            extensions["reason"] = reason.value
        extensions.update(more)
        super().__init__(message, extensions=extensions)

    @classmethod
    def from_domain(cls, err: DomainError, retry_after: int = 0) -> ApiError:
        """`retry_after`: for RATE_LIMITED, seconds until the budget has room again (as REST's
        Retry-After header), in `extensions.retryAfter`."""
        if err.code is Code.RATE_LIMITED:
            return cls(err.code, err.message, err.reason, retryAfter=max(retry_after, 1))
        return cls(err.code, err.message, err.reason)


def forbidden(message: str = "Not allowed") -> ApiError:
    return ApiError(Code.FORBIDDEN, message)


def bad_input(message: str, reason: Reason | None = None) -> ApiError:
    return ApiError(Code.BAD_USER_INPUT, message, reason)


def should_mask(error: GraphQLError) -> bool:
    """Mask what nobody expected; validation errors and deliberate GraphQLErrors stay."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)
