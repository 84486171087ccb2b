"""What entry points ask of the domain, and what it answers."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from uuid import UUID


class Source(StrEnum):
    UI = "UI"
    API = "API"
    EVENT_LISTENER = "EVENT_LISTENER"
    SYSTEM = "SYSTEM"


@dataclass(frozen=True, slots=True)
class ChangeStage:
    tenant_id: str
    customer_id: UUID
    stage: str
    actor: str
    source: Source
    reason_code: str | None = None
    expected_version: int | None = None
    idempotency_key: str | None = None
    # Over the rate limit: only an idempotent replay may be served, nothing may change.
    replay_only: bool = False
    # The caller's own tag for where this change began (a request's trace context), carried
    # to the transition it makes; the domain never reads it. Commands of several requests
    # share one batch, so a tag per batch would name the wrong request.
    origin: object = field(default=None, compare=False)

    def fingerprint(self) -> str:
        """What a replay must repeat to count as the same request."""
        parts = (str(self.customer_id), self.stage, self.reason_code, self.expected_version)
        return hashlib.sha256(repr(parts).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Transition:
    id: UUID
    tenant_id: str
    customer_id: UUID
    from_stage: str | None
    to_stage: str
    changed_at: datetime
    changed_by: str
    reason_code: str | None
    source: Source
    version: int
    config_version: int
    # The command's `origin`, for the audit event's trace context.
    origin: object = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class ChangeResult:
    customer_id: UUID
    stage: str
    version: int
    updated_at: datetime
    transition: Transition | None
    replayed: bool = False


@dataclass(slots=True)
class CustomerState:
    """The lifecycle columns of one customer, locked for the length of a unit of work."""

    id: UUID
    stage: str
    version: int
    entered_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class StoredResult:
    fingerprint: str
    result: ChangeResult


@dataclass(frozen=True, slots=True)
class IdempotencyRecord:
    actor: str
    key: str
    fingerprint: str
    result: ChangeResult
