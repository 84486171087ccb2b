"""The Kubernetes manifests (deploy/k8s) validate offline against Kubernetes' own schemas
and describe a gateway that would start and scale as the README says."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from customer360.settings import Settings

K8S = Path(__file__).resolve().parents[1] / "deploy" / "k8s"
VERSION = "1.33"


def documents() -> dict[str, dict[str, Any]]:
    """Every manifest by kind (the kustomization's resources and the example Secret)."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = [*kustomization["resources"], "secret.example.yaml"]
    found = {}
    for name in files:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            found[doc["kind"]] = doc
    return found


@pytest.mark.parametrize("kind", sorted(documents()))
def test_each_manifest_is_valid_kubernetes(kind: str) -> None:
    kubernetes_validate.validate(documents()[kind], VERSION, strict=True)


def test_the_check_would_catch_a_broken_manifest() -> None:
    broken = documents()["Deployment"]
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSION, strict=True)


def _settings(env: dict[str, str]) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        **{k.removeprefix("C360_").lower(): v for k, v in env.items()},
    )


def test_the_gateway_would_start_in_production_with_this_configuration() -> None:
    docs = documents()
    env = {**docs["ConfigMap"]["data"], **docs["Secret"]["stringData"]}
    # the example Secret's placeholder key is refused: it cannot reach production as it is
    assert any("C360_DATA_KEY" in p for p in _settings(env).production_problems())
    # with a real key in its place, nothing stands in the way
    env["C360_DATA_KEY"] = "k1:" + base64.b64encode(os.urandom(32)).decode()
    settings = _settings(env)
    assert settings.production and settings.production_problems() == []
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    refs = {next(iter(r.values()))["name"] for r in container["envFrom"]}
    assert refs == {docs["ConfigMap"]["metadata"]["name"], docs["Secret"]["metadata"]["name"]}


def test_the_gateway_is_hardened_probed_and_scaled() -> None:
    docs = documents()
    deployment = docs["Deployment"]["spec"]
    pod = deployment["template"]["spec"]
    (container,) = pod["containers"]
    assert (
        deployment["replicas"] >= 2 and docs["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2
    )
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "preStop" in container["lifecycle"]
    assert "--workers" in container["command"] and container["command"][-1] == "1"
    assert docs["PodDisruptionBudget"]["spec"]["minAvailable"] >= 1
    assert docs["Job"]["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "c360",
        "migrate",
    ]
