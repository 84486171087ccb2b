"""Malformed input to the write path, judged here once for GraphQL, REST and OpenAPI alike.

Each limit is decided once: what a database column and a person's screen can sensibly hold.
Entry points check a request's JSON shape (a string where a string belongs); the values
themselves are judged here, and before any permission check (the contract's order: a
malformed request is 400 before it is 403).
"""

from __future__ import annotations

from dataclasses import dataclass

from .commands import ChangeStage
from .errors import bad_input

# A stage name, a reason code, an actor's name.
MAX_TEXT = 256
# An idempotency key (GraphQL `idempotencyKey`, REST `Idempotency-Key`): 1 to 255 characters.
MAX_IDEMPOTENCY_KEY = 255


@dataclass(frozen=True, slots=True)
class FieldNames:
    """How an entry point names the fields of a stage change in its error messages."""

    stage: str = "stage"
    reason_code: str = "reasonCode"
    idempotency_key: str = "idempotencyKey"
    expected_version: str = "expectedVersion"


GRAPHQL_NAMES = FieldNames()


def check_text(name: str, value: str | None, limit: int = MAX_TEXT) -> None:
    """Text a database cannot store (NUL), or of absurd length, is malformed input."""
    if value is not None and ("\x00" in value or len(value) > limit):
        raise bad_input(f"{name} must be at most {limit} characters, without NUL")


def check_version(expected: int | None, name: str = "expectedVersion") -> None:
    # Versions start at 1: a negative one is malformed (as REST says), not a stale one.
    if expected is not None and expected < 0:
        raise bad_input(f"{name} must be a non-negative integer")


def check_change(
    stage: str,
    reason_code: str | None,
    idempotency_key: str | None,
    expected_version: int | None,
    names: FieldNames = GRAPHQL_NAMES,
) -> None:
    check_text(names.stage, stage)
    check_text(names.reason_code, reason_code)
    if idempotency_key is not None and not idempotency_key:
        raise bad_input(f"{names.idempotency_key} must be 1 to {MAX_IDEMPOTENCY_KEY} characters")
    check_text(names.idempotency_key, idempotency_key, MAX_IDEMPOTENCY_KEY)
    check_version(expected_version, names.expected_version)


def check_command(cmd: ChangeStage, names: FieldNames = GRAPHQL_NAMES) -> None:
    check_change(cmd.stage, cmd.reason_code, cmd.idempotency_key, cmd.expected_version, names)
