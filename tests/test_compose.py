"""docker-compose.yml stays valid for the real Docker Compose (no engine needed to check)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import compose

ROOT = Path(__file__).resolve().parents[1]
BINARY = Path(compose.__file__).resolve().parent / "docker-compose"


def config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BINARY), "-f", str(path), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=path.parent,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_docker_compose_config_accepts_the_stack() -> None:
    out = config(ROOT / "docker-compose.yml")
    assert out.returncode == 0, out.stderr


def test_the_check_would_catch_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(
        (ROOT / "docker-compose.yml")
        .read_text()
        .replace("condition: service_healthy", "condition: when_it_feels_like_it", 1)
    )
    assert config(broken).returncode != 0


def test_the_stack_has_what_production_needs() -> None:
    out = subprocess.run(
        [str(BINARY), "-f", str(ROOT / "docker-compose.yml"), "config", "--services"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert set(out.stdout.split()) >= {
        "postgres",
        "redis",
        "kafka",
        "kafka-init",
        "migrate",
        "gateway",
    }


def resolved_stack() -> dict[str, Any]:
    """docker-compose.yml as Docker Compose resolves it (defaults filled in), as JSON."""
    out = subprocess.run(
        [str(BINARY), "-f", str(ROOT / "docker-compose.yml"), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr
    stack: dict[str, Any] = json.loads(out.stdout)
    return stack


def test_the_gateway_connects_as_a_role_that_row_level_security_applies_to() -> None:
    from sqlalchemy import make_url

    stack = resolved_stack()
    env = stack["services"]["gateway"]["environment"]
    app = make_url(env["C360_DATABASE_URL"]).username
    owner = make_url(env["C360_MIGRATION_DATABASE_URL"]).username
    # not the owner (FORCE makes policies bind owners too, but superusers never)...
    assert app and app != owner
    # ...and created by the database at its first start, without superuser or BYPASSRLS
    created = [c["content"] for c in stack["configs"].values()]
    assert any(f"CREATE ROLE {app} LOGIN NOSUPERUSER NOBYPASSRLS" in c for c in created)
    mounts = [m["target"] for m in stack["services"]["postgres"]["configs"]]
    assert any(t.startswith("/docker-entrypoint-initdb.d/") for t in mounts)


def test_the_stack_serves_https_only_and_trusts_its_own_proxy() -> None:
    import ipaddress

    from customer360.settings import Settings

    stack = resolved_stack()
    gateway = stack["services"]["gateway"]
    # the gateway publishes nothing: clients reach it through the TLS proxy
    assert not gateway.get("ports")
    assert [p["target"] for p in stack["services"]["tls"]["ports"]] == [8443]
    # and it would start in production: a proxy is declared, from the stack's network only
    env = {k: v for k, v in gateway["environment"].items() if v}  # empty is unset
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        **{k.removeprefix("C360_").lower(): v for k, v in env.items() if k.startswith("C360_")},
    )
    assert not any("plain HTTP" in p for p in settings.production_problems())
    (subnet,) = [c["subnet"] for c in stack["networks"]["default"]["ipam"]["config"]]
    assert [ipaddress.ip_network(p) for p in settings.tls_proxy] == [ipaddress.ip_network(subnet)]
    caddyfile = stack["configs"]["caddyfile"]["content"]
    assert "reverse_proxy gateway:8000" in caddyfile and "tls " in caddyfile
