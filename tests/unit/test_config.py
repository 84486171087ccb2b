"""Stage configuration: validated as a whole, rules evaluated as data."""

from __future__ import annotations

import pytest

from customer360.lifecycle import (
    DEFAULT_CONFIG,
    DomainError,
    Reason,
    build_config,
    check_stage_rules,
)

B2C = dict(
    stages=["Lead", "Prospect", "Customer", "Churned"],
    required_reason_codes=["Churned"],
    transitions=[
        ("Lead", ["Prospect"]),  # qualify
        ("Prospect", ["Customer"]),  # convert
        ("Customer", ["Churned"]),  # churn
        ("Churned", ["Prospect"]),  # reactivate
    ],
    initial_stage="Lead",
)


def test_default_config_is_the_seed_spec() -> None:
    assert DEFAULT_CONFIG.stages == ("Prospect", "Onboarded", "Active", "At-Risk", "Churned")
    assert DEFAULT_CONFIG.initial_stage == "Prospect"
    assert DEFAULT_CONFIG.required_reason_codes == {"At-Risk", "Churned"}
    assert DEFAULT_CONFIG.rule_for("contract.renewed").to_stage == "Active"  # type: ignore[union-attr]
    assert DEFAULT_CONFIG.version == 0


def test_without_rules_any_other_stage_is_allowed_and_current_never_listed() -> None:
    assert DEFAULT_CONFIG.allowed_next_stages("Active") == [
        "Prospect",
        "Onboarded",
        "At-Risk",
        "Churned",
    ]


def test_b2c_state_machine_is_expressible() -> None:
    c = build_config(**B2C)  # type: ignore[arg-type]
    assert c.allowed_next_stages("Lead") == ["Prospect"]
    assert c.allowed_next_stages("Churned") == ["Prospect"]
    check_stage_rules(c, "Lead", "Prospect", None)
    check_stage_rules(c, "Customer", "Churned", "Price")
    check_stage_rules(c, "Churned", "Prospect", None)
    for current, target in [("Lead", "Customer"), ("Prospect", "Lead"), ("Churned", "Customer")]:
        with pytest.raises(DomainError) as e:
            check_stage_rules(c, current, target, "x")
        assert e.value.reason is Reason.TRANSITION_NOT_ALLOWED


def test_rule_order_invalid_stage_then_transition_then_reason() -> None:
    c = build_config(**B2C)  # type: ignore[arg-type]
    with pytest.raises(DomainError) as e:
        check_stage_rules(c, "Lead", "Nope", None)
    assert e.value.reason is Reason.INVALID_STAGE
    with pytest.raises(DomainError) as e:
        check_stage_rules(c, "Lead", "Churned", None)  # not allowed AND no reason
    assert e.value.reason is Reason.TRANSITION_NOT_ALLOWED
    with pytest.raises(DomainError) as e:
        check_stage_rules(c, "Customer", "Churned", "  ")
    assert e.value.reason is Reason.REASON_REQUIRED


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(stages=[]),
        dict(stages=["A", "A"]),
        dict(stages=["A", ""]),
        dict(stages=["A", " B"]),
        dict(stages=["A"], required_reason_codes=["B"]),
        dict(stages=["A"], transitions=[("A", ["B"])]),
        dict(stages=["A"], transitions=[("B", ["A"])]),
        dict(stages=["A", "B"], transitions=[("A", ["B"]), ("A", ["B"])]),
        dict(stages=["A"], initial_stage="B"),
        dict(stages=["A"], event_rules=[("contract.renewed", "B")]),
        dict(stages=["A"], event_rules=[("no.such.event", "A")]),
        dict(stages=["A"], event_rules=[("contract.renewed", "A"), ("contract.renewed", "A")]),
        dict(stages=["A" * 65]),
    ],
)
def test_invalid_configs_are_refused_as_a_whole(kwargs: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(DomainError) as e:
        build_config(**kwargs)
    assert e.value.reason is Reason.INVALID_CONFIG
    assert e.value.code.value == "BAD_USER_INPUT"


def test_initial_stage_defaults_to_the_first() -> None:
    assert build_config(["X", "Y"]).initial_stage == "X"


def test_json_round_trip() -> None:
    from customer360.lifecycle import config_from_json

    c = build_config(**B2C)  # type: ignore[arg-type]
    assert config_from_json(c.to_json()) == c
