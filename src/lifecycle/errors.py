"""Expected failures, with the stable codes and reasons of the public contract."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Code(StrEnum):
    UNAUTHENTICATED = "UNAUTHENTICATED"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    BAD_USER_INPUT = "BAD_USER_INPUT"
    CONFLICT = "CONFLICT"
    RATE_LIMITED = "RATE_LIMITED"
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"


class Reason(StrEnum):
    INVALID_ID = "INVALID_ID"
    INVALID_STAGE = "INVALID_STAGE"
    TRANSITION_NOT_ALLOWED = "TRANSITION_NOT_ALLOWED"
    REASON_REQUIRED = "REASON_REQUIRED"
    INVALID_CURSOR = "INVALID_CURSOR"
    TOO_MANY_ITEMS = "TOO_MANY_ITEMS"
    INVALID_CONFIG = "INVALID_CONFIG"
    IDEMPOTENCY_KEY_REUSED = "IDEMPOTENCY_KEY_REUSED"


class DomainError(Exception):
    """A failure the caller can act on; entry points map `code` to their transport."""

    def __init__(
        self,
        code: Code,
        message: str,
        reason: Reason | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details or {}

    def as_dict(self) -> dict[str, Any]:
        details = dict(self.details)
        if self.reason is not None:
            details["reason"] = self.reason.value
        return {"code": self.code.value, "message": self.message, "details": details}


def bad_input(message: str, reason: Reason | None = None, **details: Any) -> DomainError:
    return DomainError(Code.BAD_USER_INPUT, message, reason, details)


def not_found(what: str = "customer") -> DomainError:
    return DomainError(Code.NOT_FOUND, f"No such {what}")


def conflict(message: str, **details: Any) -> DomainError:
    return DomainError(Code.CONFLICT, message, None, details)
