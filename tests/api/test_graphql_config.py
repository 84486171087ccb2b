"""configureLifecycleStages and lifecycleStageConfig: validation, versions, rules in force."""

from __future__ import annotations

import uuid
from typing import Any

from tests.helpers import DEFAULT_STAGES, error_of

CONFIG_FIELDS = """
stages requiredReasonCodes initialStage version updatedAt updatedBy
transitions { from to }
eventRules { eventType toStage }
"""

READ = f"{{ lifecycleStageConfig {{ {CONFIG_FIELDS} }} }}"

CONFIGURE = f"""
mutation($input: LifecycleStageConfigInput!) {{
  configureLifecycleStages(input: $input) {{ {CONFIG_FIELDS} }}
}}
"""

UPDATE = """
mutation($input: UpdateLifecycleStageInput!) {
  updateLifecycleStage(input: $input) {
    success transition { fromStage toStage }
    customer { lifecycle { stage allowedNextStages } }
  }
}
"""

LIFECYCLE = """
query($id: ID!) {
  customer(id: $id) {
    lifecycle { stage allowedNextStages }
    lifecycleHistory { edges { node { fromStage toStage } } }
  }
}
"""

B2C = {
    "stages": ["Lead", "Prospect", "Customer", "Churned"],
    "requiredReasonCodes": ["Churned"],
    "initialStage": "Lead",
    "transitions": [
        {"from": "Lead", "to": ["Prospect"]},
        {"from": "Prospect", "to": ["Customer"]},
        {"from": "Customer", "to": ["Churned"]},
        {"from": "Churned", "to": ["Prospect"]},
    ],
    "eventRules": [],
}


def admin(api: Any) -> Any:
    return api.as_("ROLE_TENANT_ADMIN", sub="admin-1")


async def read_config(api: Any) -> dict[str, Any]:
    body = await api.gql(READ)
    assert "errors" not in body, body
    config: dict[str, Any] = body["data"]["lifecycleStageConfig"]
    return config


async def configure(api: Any, config: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = await admin(api).gql(CONFIGURE, {"input": config})
    return body


async def saved(api: Any, config: dict[str, Any]) -> dict[str, Any]:
    body = await configure(api, config)
    assert "errors" not in body, body
    result: dict[str, Any] = body["data"]["configureLifecycleStages"]
    return result


async def lifecycle(api: Any, cid: uuid.UUID) -> dict[str, Any]:
    body = await api.gql(LIFECYCLE, {"id": str(cid)})
    assert "errors" not in body, body
    customer: dict[str, Any] = body["data"]["customer"]
    return customer


async def test_default_configuration(api):
    # given a tenant that never saved a configuration
    config = await read_config(api)
    # then it is the seed spec's default
    assert config["stages"] == DEFAULT_STAGES
    assert config["requiredReasonCodes"] == ["At-Risk", "Churned"]
    assert config["initialStage"] == "Prospect"
    assert config["transitions"] == []
    assert config["eventRules"] == [{"eventType": "contract.renewed", "toStage": "Active"}]


async def test_b2c_machine_is_saved_and_versioned(api):
    # given a fresh tenant with no customers
    before = await read_config(api)
    # when an admin saves the B2C machine
    result = await saved(api, B2C)
    # then it comes back as saved, one version up, by the admin
    for key in ("stages", "requiredReasonCodes", "initialStage", "transitions", "eventRules"):
        assert result[key] == B2C[key], key
    assert result["version"] == before["version"] + 1
    assert result["updatedBy"] == "admin-1"
    assert result["updatedAt"] is not None
    # and every reader sees it
    assert await read_config(api) == result
    summary = await api.gql("{ lifecycleSummary { stages { stage count } } }")
    assert [s["stage"] for s in summary["data"]["lifecycleSummary"]["stages"]] == B2C["stages"]


async def test_b2c_rules_govern_moves(api, make_customer):
    # given the B2C machine and a new customer, who starts as a Lead
    await saved(api, B2C)
    cid = await make_customer()
    state = await lifecycle(api, cid)
    assert state["lifecycle"] == {"stage": "Lead", "allowedNextStages": ["Prospect"]}

    async def move(stage: str, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = await api.gql(
            UPDATE, {"input": {"customerId": str(cid), "stage": stage, **extra}}
        )
        return body

    # when a move skips a step, it is refused
    ext = error_of(await move("Customer"))
    assert (ext["code"], ext["reason"]) == ("BAD_USER_INPUT", "TRANSITION_NOT_ALLOWED")
    assert (await lifecycle(api, cid))["lifecycle"]["stage"] == "Lead"
    # and moves along the machine succeed, offering only the rule's targets
    path = [
        ("Prospect", {}, ["Customer"]),
        ("Customer", {}, ["Churned"]),
        ("Churned", {"reasonCode": "moved away"}, ["Prospect"]),
        ("Prospect", {}, ["Customer"]),
    ]
    for stage, extra, allowed in path:
        body = await move(stage, **extra)
        assert "errors" not in body, (stage, body)
        lc = body["data"]["updateLifecycleStage"]["customer"]["lifecycle"]
        assert lc == {"stage": stage, "allowedNextStages": allowed}
    # and a move against the rules from there is refused
    ext = error_of(await move("Lead"))
    assert ext["reason"] == "TRANSITION_NOT_ALLOWED"


async def test_b2c_reactivation_and_disallowed_moves(api, make_customer):
    # given the B2C machine and a customer walked to Churned (set up through REST)
    await saved(api, B2C)
    cid = await make_customer()
    for stage in ("Prospect", "Customer"):
        assert (await api.patch(cid, {"stage": stage})).status_code == 200
    resp = await api.patch(cid, {"stage": "Churned", "reason_code": "price"})
    assert resp.status_code == 200, resp.text
    assert (await lifecycle(api, cid))["lifecycle"]["allowedNextStages"] == ["Prospect"]
    # when a churned customer is moved straight back to Customer
    body = await api.gql(UPDATE, {"input": {"customerId": str(cid), "stage": "Customer"}})
    # then it is not allowed
    ext = error_of(body)
    assert (ext["code"], ext["reason"]) == ("BAD_USER_INPUT", "TRANSITION_NOT_ALLOWED")
    assert (await lifecycle(api, cid))["lifecycle"]["stage"] == "Churned"


async def test_only_configure_stages_may_configure(api):
    before = await read_config(api)
    # when an account manager tries
    body = await api.gql(CONFIGURE, {"input": B2C})
    # then FORBIDDEN and nothing changes
    assert error_of(body)["code"] == "FORBIDDEN"
    assert await read_config(api) == before


INVALID = {
    "duplicate stage": {"stages": ["A", "B", "A"]},
    "empty stage name": {"stages": ["A", ""]},
    "rule from unknown stage": {"stages": ["A", "B"], "transitions": [{"from": "X", "to": ["B"]}]},
    "rule to unknown stage": {"stages": ["A", "B"], "transitions": [{"from": "A", "to": ["X"]}]},
    "reason for unknown stage": {"stages": ["A", "B"], "requiredReasonCodes": ["X"]},
    "unknown initial stage": {"stages": ["A", "B"], "initialStage": "X"},
    "event rule to unknown stage": {
        "stages": ["A", "B"],
        "eventRules": [{"eventType": "contract.renewed", "toStage": "X"}],
    },
    "no stages": {"stages": []},
}


async def test_invalid_configurations_are_refused(api):
    before = await read_config(api)
    for name, config in INVALID.items():
        # when an invalid configuration is saved
        body = await configure(api, config)
        # then INVALID_CONFIG
        ext = error_of(body)
        assert (ext["code"], ext.get("reason")) == ("BAD_USER_INPUT", "INVALID_CONFIG"), name
    # and nothing changed
    assert await read_config(api) == before


async def test_removing_a_stage_that_holds_customers_is_refused(api, make_customer):
    # given a customer in Prospect (the default initial stage)
    await make_customer()
    before = await read_config(api)
    # when a configuration without Prospect is saved
    body = await configure(api, {"stages": ["Onboarded", "Active"]})
    # then INVALID_CONFIG and nothing changes
    ext = error_of(body)
    assert (ext["code"], ext["reason"]) == ("BAD_USER_INPUT", "INVALID_CONFIG")
    assert await read_config(api) == before


async def test_stale_expected_version_is_conflict(api):
    # given a saved configuration at some version
    first = await saved(api, {"stages": ["A", "B"]})
    version = first["version"]
    # when saving against an older version
    body = await configure(api, {"stages": ["A", "B", "C"], "expectedVersion": version - 1})
    # then CONFLICT and nothing changes
    assert error_of(body)["code"] == "CONFLICT"
    assert (await read_config(api))["stages"] == ["A", "B"]
    # and saving against the current version works and moves the version on
    second = await saved(api, {"stages": ["A", "B", "C"], "expectedVersion": version})
    assert second["version"] == version + 1
    third = await saved(api, {"stages": ["A", "C"]})
    assert third["version"] == version + 2


async def test_a_negative_expected_version_is_malformed_not_stale(api):
    # given a saved configuration
    await saved(api, {"stages": ["A", "B"]})
    # when saving against a version no configuration can have
    body = await configure(api, {"stages": ["A", "B", "C"], "expectedVersion": -1})
    # then BAD_USER_INPUT, as for a stage change, and nothing changes
    assert error_of(body)["code"] == "BAD_USER_INPUT"
    assert (await read_config(api))["stages"] == ["A", "B"]
    # and a malformed request answers so before the permission check, as on REST
    viewer = api.as_("ROLE_VIEWER")
    body = await viewer.gql(CONFIGURE, {"input": {"stages": ["A"], "expectedVersion": -1}})
    assert error_of(body)["code"] == "BAD_USER_INPUT"
    body = await viewer.gql(CONFIGURE, {"input": {"stages": ["A"], "expectedVersion": 0}})
    assert error_of(body)["code"] == "FORBIDDEN"


async def test_renaming_stages_keeps_old_names_in_history(api, make_customer):
    # given a customer that went Prospect -> Onboarded -> Active under the default
    cid = await make_customer()
    for stage in ("Onboarded", "Active"):
        assert (await api.patch(cid, {"stage": stage})).status_code == 200
    # when Onboarded is renamed (nobody is in it any more)
    renamed = ["Prospect", "Onboarding", "Active", "At-Risk", "Churned"]
    await saved(api, {"stages": renamed, "requiredReasonCodes": ["At-Risk", "Churned"]})
    # then the history still speaks of Onboarded
    state = await lifecycle(api, cid)
    pairs = [
        (e["node"]["fromStage"], e["node"]["toStage"]) for e in state["lifecycleHistory"]["edges"]
    ]
    assert pairs == [("Onboarded", "Active"), ("Prospect", "Onboarded"), (None, "Prospect")]
    # and the live view uses the new names
    assert state["lifecycle"] == {
        "stage": "Active",
        "allowedNextStages": ["Prospect", "Onboarding", "At-Risk", "Churned"],
    }
    summary = await api.gql("{ lifecycleSummary { stages { stage count } } }")
    assert summary["data"]["lifecycleSummary"]["stages"] == [
        {"stage": s, "count": 1 if s == "Active" else 0} for s in renamed
    ]
