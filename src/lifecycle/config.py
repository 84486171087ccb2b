"""A tenant's stage configuration: validated as a whole, evaluated as data."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import Reason, bad_input

MAX_STAGES = 50
MAX_NAME = 64
# The CloudEvent types the gateway consumes (CONTRACT section 6), each on a Kafka topic of
# the same name: the one list that the consumers, `c360 ingest`, the event handlers and
# `c360 kafka-topics` follow.
PROFILE_EVENT_TYPES = ("customer.created", "customer.updated")
# Types whose arrival a tenant's eventRules may turn into a stage change.
RULE_EVENT_TYPES = ("contract.renewed", "support.issue.opened", "support.issue.closed")
CONSUMED_EVENT_TYPES = (*PROFILE_EVENT_TYPES, *RULE_EVENT_TYPES)


@dataclass(frozen=True, slots=True)
class EventRule:
    event_type: str
    to_stage: str


@dataclass(frozen=True, slots=True)
class StageConfig:
    stages: tuple[str, ...]
    required_reason_codes: frozenset[str]
    # from-stage -> allowed targets; a stage with no rule may move anywhere
    transitions: Mapping[str, tuple[str, ...]]
    initial_stage: str
    event_rules: tuple[EventRule, ...]
    version: int = 0
    updated_at: datetime | None = None
    updated_by: str | None = None

    def allowed_next_stages(self, current: str) -> list[str]:
        targets = self.transitions.get(current)
        pool = self.stages if targets is None else targets
        return [s for s in pool if s != current]

    def is_allowed(self, current: str, target: str) -> bool:
        targets = self.transitions.get(current)
        return targets is None or target in targets

    def requires_reason(self, stage: str) -> bool:
        return stage in self.required_reason_codes

    def rule_for(self, event_type: str) -> EventRule | None:
        return next((r for r in self.event_rules if r.event_type == event_type), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "stages": list(self.stages),
            "requiredReasonCodes": [s for s in self.stages if s in self.required_reason_codes],
            "transitions": [{"from": k, "to": list(v)} for k, v in self.transitions.items()],
            "initialStage": self.initial_stage,
            "eventRules": [
                {"eventType": r.event_type, "toStage": r.to_stage} for r in self.event_rules
            ],
        }


def _names(values: Iterable[Any], what: str) -> list[str]:
    out: list[str] = []
    for v in values:
        if not isinstance(v, str) or not v.strip():
            raise bad_input(f"{what}: names must be non-empty strings", Reason.INVALID_CONFIG)
        if v != v.strip() or len(v) > MAX_NAME or "\x00" in v:
            raise bad_input(
                f"{what}: {v!r} has surrounding spaces or is over {MAX_NAME} characters",
                Reason.INVALID_CONFIG,
            )
        out.append(v)
    return out


def build_config(
    stages: Sequence[str],
    required_reason_codes: Sequence[str] = (),
    transitions: Sequence[tuple[str, Sequence[str]]] = (),
    initial_stage: str | None = None,
    event_rules: Sequence[tuple[str, str]] = (),
    *,
    version: int = 0,
    updated_at: datetime | None = None,
    updated_by: str | None = None,
) -> StageConfig:
    """Validate a whole configuration; any fault is BAD_USER_INPUT / INVALID_CONFIG."""
    names = _names(stages, "stages")
    if not names:
        raise bad_input("stages: at least one stage is required", Reason.INVALID_CONFIG)
    if len(names) > MAX_STAGES:
        raise bad_input(f"stages: at most {MAX_STAGES}", Reason.INVALID_CONFIG)
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise bad_input(f"stages: duplicate names {dupes}", Reason.INVALID_CONFIG)
    known = set(names)

    def must_know(stage: str, where: str) -> None:
        if stage not in known:
            raise bad_input(f"{where}: {stage!r} is not a configured stage", Reason.INVALID_CONFIG)

    required = _names(required_reason_codes, "requiredReasonCodes")
    for s in required:
        must_know(s, "requiredReasonCodes")

    rules: dict[str, tuple[str, ...]] = {}
    for src, targets in transitions:
        must_know(src, "transitions.from")
        if src in rules:
            raise bad_input(f"transitions: {src!r} has two rules", Reason.INVALID_CONFIG)
        for t in targets:
            must_know(t, "transitions.to")
        rules[src] = tuple(dict.fromkeys(t for t in targets if t != src))

    initial = initial_stage if initial_stage is not None else names[0]
    must_know(initial, "initialStage")

    ev: list[EventRule] = []
    for event_type, to_stage in event_rules:
        if event_type not in RULE_EVENT_TYPES:
            raise bad_input(
                f"eventRules: {event_type!r} is not one of {sorted(RULE_EVENT_TYPES)}",
                Reason.INVALID_CONFIG,
            )
        if any(r.event_type == event_type for r in ev):
            raise bad_input(f"eventRules: {event_type!r} has two rules", Reason.INVALID_CONFIG)
        must_know(to_stage, "eventRules.toStage")
        ev.append(EventRule(event_type, to_stage))

    return StageConfig(
        stages=tuple(names),
        required_reason_codes=frozenset(required),
        transitions=rules,
        initial_stage=initial,
        event_rules=tuple(ev),
        version=version,
        updated_at=updated_at,
        updated_by=updated_by,
    )


def config_from_json(
    doc: Mapping[str, Any],
    *,
    version: int = 0,
    updated_at: datetime | None = None,
    updated_by: str | None = None,
) -> StageConfig:
    return build_config(
        doc["stages"],
        doc.get("requiredReasonCodes", ()),
        [(t["from"], t["to"]) for t in doc.get("transitions", ())],
        doc.get("initialStage"),
        [(r["eventType"], r["toStage"]) for r in doc.get("eventRules", ())],
        version=version,
        updated_at=updated_at,
        updated_by=updated_by,
    )


@dataclass(frozen=True, slots=True)
class ConfigProposal:
    """A configuration as submitted, validated only once its version has been checked."""

    stages: Sequence[str]
    required_reason_codes: Sequence[str] = ()
    transitions: Sequence[tuple[str, Sequence[str]]] = ()
    initial_stage: str | None = None
    event_rules: Sequence[tuple[str, str]] = ()

    def build(self) -> StageConfig:
        return build_config(
            self.stages,
            self.required_reason_codes,
            self.transitions,
            self.initial_stage,
            self.event_rules,
        )


DEFAULT_CONFIG_JSON: dict[str, Any] = {
    "stages": ["Prospect", "Onboarded", "Active", "At-Risk", "Churned"],
    "requiredReasonCodes": ["At-Risk", "Churned"],
    "initialStage": "Prospect",
    "transitions": [],
    "eventRules": [{"eventType": "contract.renewed", "toStage": "Active"}],
}
DEFAULT_CONFIG = config_from_json(DEFAULT_CONFIG_JSON)
