"""Opaque keyset cursors, bound to a tenant, a list and an ordering."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from customer360.lifecycle import Reason

from .errors import bad_input

MAX_FIRST = 200


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a connection, before it takes either API shape (strawberry's objects or
    the compiled path's dicts)."""

    rows: list[Any]
    # A row's cursor, made when asked for: most lists are read without their edges' cursors.
    cursor: Callable[[Any], str]
    has_next: bool
    has_previous: bool
    count: Callable[[], Awaitable[int]]


def check_first(first: int) -> int:
    if first < 0 or first > MAX_FIRST:
        raise bad_input(f"first must be between 0 and {MAX_FIRST}")
    return first


def scope_of(*parts: Any) -> str:
    """A short fingerprint of what a cursor belongs to (tenant, list, ordering, filter)."""
    return hashlib.sha256(orjson.dumps(parts, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def encode_cursor(scope: str, keys: list[Any]) -> str:
    raw = orjson.dumps([scope, keys])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, scope: str) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        doc = orjson.loads(raw)
        ok = isinstance(doc, list) and len(doc) == 2 and isinstance(doc[1], list)
    except (ValueError, orjson.JSONDecodeError):
        ok = False
    if not ok or doc[0] != scope:
        raise bad_input(
            "This cursor is unreadable or belongs to another list", Reason.INVALID_CURSOR
        )
    keys: list[Any] = doc[1]
    return keys
