"""CloudEvents in: each consumed type becomes writes and, by the tenant's rules, a command.

The Kafka consumers and `c360 ingest` reach them through one use case (`apply_event`). An
event is marked processed (source + id) in the same transaction as its effect, so a
redelivery changes nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from customer360.data.uow import SqlUnitOfWork
from customer360.lifecycle import (
    ChangeStage,
    Code,
    DomainError,
    Source,
    change_stages,
    start_lifecycle,
)
from customer360.lifecycle.config import CONSUMED_EVENT_TYPES
from customer360.lifecycle.service import Clock

TIERS = frozenset({"FREE", "BASIC", "PRO", "ENTERPRISE"})
TEXT_FIELDS = ("name", "email", "phone", "company_name", "assigned_to")
# A profile field or tag from an upstream system: room for long company names and addresses.
MAX_PROFILE_TEXT = 512


class Outcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"


class EventRejected(Exception):
    """The event cannot be parsed or applied; it belongs in the dead-letter topic."""


@dataclass(frozen=True, slots=True)
class Event:
    source: str
    id: str
    type: str
    tenant: str
    customer_id: uuid.UUID
    data: dict[str, Any]


# A CloudEvent attribute (source, id, type, tenantid) or an id inside `data`.
MAX_ATTRIBUTE = 256


def _str(doc: Mapping[str, Any], key: str, where: str = "event") -> str:
    value = doc.get(key)
    if (
        not isinstance(value, str)
        or not value.strip()
        or "\x00" in value
        or len(value) > MAX_ATTRIBUTE
    ):
        raise EventRejected(
            f"{where}.{key} must be a non-empty string of at most {MAX_ATTRIBUTE} characters"
        )
    return value


def _time(doc: Mapping[str, Any], key: str, where: str = "data") -> datetime:
    raw = _str(doc, key, where)
    try:
        at = datetime.fromisoformat(raw)
    except ValueError:
        raise EventRejected(f"{where}.{key} is not an ISO 8601 time: {raw[:40]!r}") from None
    at = at if at.tzinfo is not None else at.replace(tzinfo=UTC)
    if not datetime(1900, 1, 2, tzinfo=UTC) <= at <= datetime(9999, 12, 30, tzinfo=UTC):
        raise EventRejected(f"{where}.{key} is out of range: {raw[:40]!r}")
    return at


def _customer_id(data: Mapping[str, Any]) -> uuid.UUID:
    raw = _str(data, "customer_id", "data")
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise EventRejected(f"data.customer_id is not a UUID: {raw[:40]!r}") from None


def _profile(data: Mapping[str, Any]) -> dict[str, Any]:
    """The profile fields present in `data`, checked; unknown fields are ignored."""
    out: dict[str, Any] = {}
    for key in TEXT_FIELDS:
        if key in data:
            value = data[key]
            if value is not None and (
                not isinstance(value, str) or len(value) > MAX_PROFILE_TEXT or "\x00" in value
            ):
                raise EventRejected(f"data.{key} must be a string of at most {MAX_PROFILE_TEXT}")
            out[key] = value
    if "name" in out and not (out["name"] or "").strip():
        raise EventRejected("data.name must not be empty")
    if "tier" in data:
        tier = data["tier"]
        if isinstance(tier, str):
            tier = tier.upper()
        if tier is not None and tier not in TIERS:
            raise EventRejected(f"data.tier must be one of {sorted(TIERS)}")
        out["tier"] = tier
    if "tags" in data:
        tags = data["tags"] or []
        if not isinstance(tags, list) or not all(
            isinstance(t, str) and "\x00" not in t and len(t) <= MAX_PROFILE_TEXT for t in tags
        ):
            raise EventRejected("data.tags must be a list of strings")
        out["tags"] = list(dict.fromkeys(tags))
    return out


def parse_event(event: Any) -> Event:
    """A structured-mode CloudEvent of a consumed type, checked, or EventRejected."""
    if not isinstance(event, Mapping):
        raise EventRejected("event must be a JSON object")
    if event.get("specversion") != "1.0":
        raise EventRejected("specversion must be '1.0'")
    source, event_id, type_ = _str(event, "source"), _str(event, "id"), _str(event, "type")
    tenant = _str(event, "tenantid")
    _time(event, "time", "event")
    if type_ not in HANDLERS:
        raise EventRejected(f"unsupported event type {type_!r}")
    data = event.get("data")
    if not isinstance(data, Mapping):
        raise EventRejected("event.data must be a JSON object")
    return Event(source, event_id, type_, tenant, _customer_id(data), dict(data))


async def handle(uow: SqlUnitOfWork, ev: Event, clock: Clock) -> Outcome:
    """The event's effects inside the caller's unit of work (which alone commits).

    A stage change it makes reads `clock` where a request's does: under its locks, just
    before it is written. Its `changedAt` is then as close to its commit as a mutation's,
    not earlier by the event's other statements."""
    now = clock()
    # The configuration lock first, as on every write path, before any customer row.
    await uow.lifecycle.stage_config(ev.tenant, for_write=True)
    if not await uow.customers.mark_processed(ev.source, ev.id, ev.tenant, ev.type):
        return Outcome.DUPLICATE
    await HANDLERS[ev.type](uow, ev, now)
    rule = (await uow.lifecycle.stage_config(ev.tenant)).rule_for(ev.type)
    if rule is not None:
        cmd = ChangeStage(
            tenant_id=ev.tenant,
            customer_id=ev.customer_id,
            stage=rule.to_stage,
            actor=ev.source,
            source=Source.EVENT_LISTENER,
            reason_code=ev.type,
        )
        (outcome,) = await change_stages(uow.lifecycle, [cmd], clock)
        # A move the tenant's rules refuse is skipped; the event's other effects stand.
        if isinstance(outcome, DomainError) and outcome.code is Code.NOT_FOUND:
            raise EventRejected(f"unknown customer {ev.customer_id}")
    # Which event moved the customer, for its data export (the history's chain is untouched).
    await uow.lifecycle.note_cause(ev.tenant, ev.source, ev.id, ev.type)
    return Outcome.APPLIED


async def _created(uow: SqlUnitOfWork, ev: Event, now: datetime) -> None:
    profile = _profile(ev.data)
    if await uow.customers.exists(ev.tenant, ev.customer_id):
        # A re-sent creation (new event id) refreshes the profile; the lifecycle stays.
        await uow.customers.update_profile(ev.tenant, ev.customer_id, profile, now)
        return
    if "name" not in profile:
        raise EventRejected("data.name is required to create a customer")
    config = await uow.lifecycle.stage_config(ev.tenant, for_write=True)
    first = start_lifecycle(config, ev.tenant, ev.customer_id, ev.source, now)
    if not await uow.customers.insert(ev.tenant, first, profile):
        # created meanwhile by a concurrent event for the same customer: refresh instead
        await uow.customers.update_profile(ev.tenant, ev.customer_id, profile, now)
        return
    await uow.lifecycle.record(ev.tenant, [first], [])


async def _require(uow: SqlUnitOfWork, ev: Event) -> None:
    if not await uow.customers.exists(ev.tenant, ev.customer_id):
        raise EventRejected(f"unknown customer {ev.customer_id}")


async def _updated(uow: SqlUnitOfWork, ev: Event, now: datetime) -> None:
    await _require(uow, ev)
    await uow.customers.update_profile(ev.tenant, ev.customer_id, _profile(ev.data), now)


async def _renewed(uow: SqlUnitOfWork, ev: Event, now: datetime) -> None:
    await _require(uow, ev)
    contract = _str(ev.data, "contract_id", "data")
    at = _time(ev.data, "renewed_at")
    await uow.customers.contract_renewed(ev.tenant, ev.customer_id, contract, at)


async def _opened(uow: SqlUnitOfWork, ev: Event, now: datetime) -> None:
    await _require(uow, ev)
    priority = ev.data.get("priority")
    await uow.customers.issue_opened(
        ev.tenant,
        ev.customer_id,
        _str(ev.data, "issue_id", "data"),
        priority if isinstance(priority, str) else None,
        _time(ev.data, "opened_at"),
    )


async def _closed(uow: SqlUnitOfWork, ev: Event, now: datetime) -> None:
    await _require(uow, ev)
    await uow.customers.issue_closed(
        ev.tenant, ev.customer_id, _str(ev.data, "issue_id", "data"), _time(ev.data, "closed_at")
    )


Handler = Callable[[SqlUnitOfWork, Event, datetime], Awaitable[None]]
HANDLERS: dict[str, Handler] = {
    "customer.created": _created,
    "customer.updated": _updated,
    "contract.renewed": _renewed,
    "support.issue.opened": _opened,
    "support.issue.closed": _closed,
}
if tuple(HANDLERS) != CONSUMED_EVENT_TYPES:  # the one list of consumed types decides
    raise RuntimeError("an event handler for each consumed type, in CONSUMED_EVENT_TYPES order")
