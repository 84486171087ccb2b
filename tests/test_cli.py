"""`c360` as operators run it: real subprocesses against the test database."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import OctKey
from sqlalchemy import text

from customer360.data.queries import CustomerFilterSpec
from customer360.devstack import free_port
from tests.conftest import SECRET, scratch_database
from tests.helpers import created_event, event, renewed_event

ROOT = Path(__file__).resolve().parents[1]
C360 = [sys.executable, "-m", "customer360.cli"]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("C360_")}
    env.update(extra)
    return env


def run(
    args: list[str], env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        C360 + args, env=env, input=stdin, capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_token_is_signed_with_the_secret_and_normalises_roles() -> None:
    out = run(
        [
            "token",
            "--sub",
            "u-9",
            "--tenant",
            "t-9",
            "--role",
            "account_manager",
            "--role",
            "ROLE_TENANT_ADMIN",
            "--ttl",
            "60",
        ],
        clean_env(C360_JWT_SECRET=SECRET),
    )
    assert out.returncode == 0, out.stderr
    claims = jwt.decode(out.stdout.strip(), OctKey.import_key(SECRET)).claims
    assert claims["sub"] == "u-9" and claims["tenant_id"] == "t-9"
    assert claims["roles"] == ["ROLE_ACCOUNT_MANAGER", "ROLE_TENANT_ADMIN"]
    assert claims["iss"] == "c360-dev" and claims["aud"] == "customer360"
    assert 55 <= claims["exp"] - time.time() <= 61


def test_export_schema_equals_the_committed_schema() -> None:
    out = run(["export-schema"], clean_env())
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (ROOT / "schema.graphql").read_text().strip()


async def test_ingest_applies_good_lines_and_reports_the_bad_ones(
    database_url: str, engine, tenant: str
) -> None:
    good = created_event(tenant)
    cid = good["data"]["customer_id"]
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps(good),  # duplicate
        json.dumps(
            event("customer.updated", tenant, {"customer_id": str(uuid.uuid4()), "name": "x"})
        ),
        "",
        json.dumps(renewed_event(tenant, cid, renewed_at="2025-01-01T00:00:00Z")),
    ]
    out = run(["ingest", "-"], clean_env(C360_DATABASE_URL=database_url), "\n".join(lines) + "\n")
    assert out.returncode == 2, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "applied=2 duplicate=1 rejected=2"
    errors = out.stderr.strip().splitlines()
    assert errors[0].startswith("line 2: not JSON")
    assert errors[1].startswith("line 4: unknown customer")
    async with engine.connect() as c:
        stage = (
            await c.execute(text("SELECT stage FROM customers WHERE id=:c"), {"c": uuid.UUID(cid)})
        ).scalar()
    assert stage == "Active"  # the renewal after the bad lines still applied


def test_ingest_of_a_clean_file_exits_zero(database_url: str, tenant: str, tmp_path: Path) -> None:
    f = tmp_path / "events.jsonl"
    f.write_text("\n".join(json.dumps(created_event(tenant)) for _ in range(3)) + "\n")
    out = run(["ingest", str(f)], clean_env(C360_DATABASE_URL=database_url))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "applied=3 duplicate=0 rejected=0"


def test_production_start_refuses_without_its_settings() -> None:
    out = run(["serve"], clean_env(C360_ENV="production", C360_JWT_SECRET="x"))
    assert out.returncode == 1
    for needle in ("C360_DATABASE_URL", "C360_REDIS_URL", "C360_DATA_KEY", "token check"):
        assert needle in out.stderr


@pytest.mark.slow
def test_c360_dev_boots_embedded_servers_serves_and_stops_them(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [*C360, "dev", "--port", str(port), "--demo-customers", "40"],
        cwd=ROOT,
        env=clean_env(C360_DATA_DIR=str(tmp_path / "data")),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        tokens: dict[str, str] = {}
        role = None
        deadline = time.monotonic() + 120
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("ROLE_"):
                role = line.strip().rstrip(":")
            elif line.strip().startswith("Bearer ") and role:
                tokens[role] = line.strip()
            elif line.startswith("ready: "):
                break
            assert time.monotonic() < deadline
        assert set(tokens) == {
            "ROLE_CUSTOMER_VIEWER",
            "ROLE_ACCOUNT_MANAGER",
            "ROLE_TENANT_ADMIN",
            "ROLE_SUPER_ADMIN",
        }
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.05)
        resp = httpx.post(
            f"{url}/graphql",
            headers={"Authorization": tokens["ROLE_TENANT_ADMIN"]},
            json={"query": "{ lifecycleSummary { total } }"},
        )
        assert resp.json() == {"data": {"lifecycleSummary": {"total": 40}}}
        page = httpx.get(f"{url}/graphql", headers={"Accept": "text/html"})
        assert page.status_code == 200 and "graphiql" in page.text.lower()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    # everything it started is gone: nothing keeps the embedded data folder's server running
    pid_file = tmp_path / "data" / "postgres" / "postmaster.pid"
    assert not pid_file.exists()


async def test_migrate_and_seed_build_a_consistent_tenant(pg_server_url: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    # given an empty database
    async with scratch_database(pg_server_url, "c360_cli", migrate=False) as url:
        env = clean_env(C360_DATABASE_URL=url, C360_DATA_KEY=K1)
        # when it is migrated and seeded through the CLI
        assert run(["migrate"], env).returncode == 0
        out = run(["seed", "--tenant", "demo-x", "--customers", "300"], env)
        assert out.returncode == 0, out.stderr
        assert "seeded 300 customers" in out.stderr
        # then counts, versions and history chains agree
        engine = create_async_engine(url)
        async with engine.connect() as c:
            counts = dict(
                (
                    await c.execute(
                        text("SELECT stage, count FROM stage_counts WHERE tenant_id='demo-x'")
                    )
                ).all()
            )
            actual = dict(
                (
                    await c.execute(
                        text(
                            "SELECT stage, count(*) FROM customers "
                            "WHERE tenant_id='demo-x' GROUP BY stage"
                        )
                    )
                ).all()
            )
            versions = (await c.execute(text("SELECT array_agg(version) FROM customers"))).scalar()
            broken = (
                await c.execute(
                    text(
                        """SELECT count(*) FROM customers c WHERE c.tenant_id='demo-x' AND (
                     c.version <> (SELECT count(*) FROM lifecycle_history h
                                   WHERE h.customer_id = c.id)
                     OR c.stage <> (SELECT to_stage FROM lifecycle_history h
                                    WHERE h.customer_id = c.id ORDER BY version DESC LIMIT 1)
                     OR EXISTS (SELECT 1 FROM lifecycle_history a JOIN lifecycle_history b
                                ON a.customer_id = b.customer_id AND b.version = a.version + 1
                                WHERE a.customer_id = c.id AND b.from_stage <> a.to_stage))"""
                    )
                )
            ).scalar()
            # and the planner knows what was loaded (no waiting for autovacuum)
            analysed = dict(
                (
                    await c.execute(
                        text(
                            "SELECT relname, last_analyze IS NOT NULL FROM pg_stat_user_tables "
                            "WHERE relname IN ('customers', 'lifecycle_history')"
                        )
                    )
                ).all()
            )
        assert counts == actual and sum(counts.values()) == 300
        assert broken == 0
        assert analysed == {"customers": True, "lifecycle_history": True}
        # and the history chain verifies, until a superuser rewrites one row behind the
        # triggers' back: then verify fails naming the tenant and that row
        out = run(["audit", "verify"], env)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"ok: {sum(versions)} rows verified"
        async with engine.begin() as c:
            await c.execute(text("SET LOCAL session_replication_role = replica"))
            victim = (
                await c.execute(
                    text(
                        "UPDATE lifecycle_history SET changed_by = 'mallory' WHERE id = ("
                        "SELECT id FROM lifecycle_history ORDER BY chain_pos DESC LIMIT 1 "
                        "OFFSET 7) RETURNING id"
                    )
                )
            ).scalar()
        await engine.dispose()
        out = run(["audit", "verify", "--tenant", "demo-x"], env)
        assert out.returncode == 1
        assert f"tenant demo-x row {victim}" in out.stderr
        await keys_and_erase(url, env)


K1 = "k1:" + base64.b64encode(b"1" * 32).decode()
K2 = "k2:" + base64.b64encode(b"2" * 32).decode()


async def keys_and_erase(url: str, env: dict[str, str]) -> None:
    """`c360 keys rotate` and `c360 erase` on the seeded tenant (its own database)."""
    from customer360.data.crypto import Keyring
    from customer360.data.db import make_engine
    from customer360.data.keys import TenantKeys
    from customer360.data.queries import Reads

    # rotation: with the new key listed first, every data key is re-wrapped by it...
    out = run(["keys", "rotate"], {**env, "C360_DATA_KEY": f"{K2},{K1}"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "rotated: 1 tenant keys now wrapped by k2"
    # ...so the old key can go: a process knowing only the new one reads every email
    engine = make_engine(url, keys=TenantKeys(Keyring.parse(K2)))
    try:
        page = await Reads(engine).list_customers(
            "demo-x", CustomerFilterSpec(), "CREATED_AT_DESC", 50, None
        )
        assert len(page) == 50 and all(r.email and "@" in r.email for r in page)
        victim = page[0].id
        env2 = {**env, "C360_DATA_KEY": K2}
        # erasure of one customer, then of an unknown one (exit 1), then of a bad id (exit 2)
        out = run(["erase", "--tenant", "demo-x", "--customer", str(victim)], env2)
        assert out.returncode == 0 and out.stdout.strip() == f"erased: customer {victim}"
        assert (
            run(["erase", "--tenant", "demo-x", "--customer", str(uuid.uuid4())], env2).returncode
            == 1
        )
        assert run(["erase", "--tenant", "demo-x", "--customer", "nope"], env2).returncode == 2
        got = (await Reads(engine).customers_by_id("demo-x", [victim]))[victim]
        assert (got.name, got.email, got.phone) == ("[erased]", None, None)
    finally:
        await engine.dispose()


def test_ingest_rejects_undecodable_and_oversized_lines_and_goes_on(
    database_url: str, tenant: str, tmp_path: Path
) -> None:
    big = created_event(tenant)
    big["id"] = "y" * 20_000
    f = tmp_path / "mixed.jsonl"
    f.write_bytes(
        b"\xff\xfe not utf-8\n"
        + json.dumps(big).encode()
        + b"\n"
        + json.dumps(created_event(tenant)).encode()
        + b"\n"
    )
    out = run(["ingest", str(f)], clean_env(C360_DATABASE_URL=database_url))
    assert out.returncode == 2, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "applied=1 duplicate=0 rejected=2"
    assert [ln.split(":")[0] for ln in out.stderr.strip().splitlines()] == ["line 1", "line 2"]


async def test_migrate_grants_the_application_role(pg_server_url: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    role = f"c360_app_{uuid.uuid4().hex[:8]}"
    admin = create_async_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as c:
        await c.execute(text(f'CREATE ROLE "{role}" LOGIN'))
    try:
        async with scratch_database(pg_server_url, "c360_grant", migrate=False) as url:
            await migrate_and_check_the_grants(url, role)
    finally:
        async with admin.connect() as c:
            await c.execute(text(f'DROP ROLE IF EXISTS "{role}"'))
        await admin.dispose()


async def migrate_and_check_the_grants(owner_url: str, role: str) -> None:
    """`c360 migrate` as the owner gives `role` what the gateway needs, and no more."""
    from sqlalchemy import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    owner = make_url(owner_url)
    app_url = owner.set(username=role).render_as_string(hide_password=False)
    out = run(
        ["migrate"],
        clean_env(
            C360_MIGRATION_DATABASE_URL=owner.render_as_string(hide_password=False),
            C360_DATABASE_URL=app_url,
        ),
    )
    assert out.returncode == 0, out.stderr
    assert f"granted table access to role {role}" in out.stderr
    as_app = create_async_engine(app_url)
    async with as_app.connect() as c:
        # row-level security: no tenant in scope, no row written
        with pytest.raises(Exception, match="row-level security"):
            await c.execute(
                text(
                    "INSERT INTO outbox (tenant_id, topic, key, payload) VALUES ('t','x','k','{}')"
                )
            )
    async with as_app.begin() as c:
        await c.execute(text("SELECT set_config('app.tenant_id', 't', true)"))
        await c.execute(
            text("INSERT INTO outbox (tenant_id, topic, key, payload) VALUES ('t','x','k','{}')")
        )
        assert (await c.execute(text("SELECT count(*) FROM outbox"))).scalar() == 1
    # history is append-only for the application's role: the grant itself says no
    for sql in ("UPDATE lifecycle_history SET changed_by = 'x'", "DELETE FROM history_heads"):
        async with as_app.connect() as c:
            with pytest.raises(Exception, match="permission denied"):
                await c.execute(text(sql))
    await as_app.dispose()


def test_production_commands_never_make_up_a_data_key(
    database_url: str, tenant: str, tmp_path: Path
) -> None:
    # given production settings without C360_DATA_KEY
    env = clean_env(
        C360_ENV="production", C360_DATABASE_URL=database_url, C360_DATA_DIR=str(tmp_path)
    )
    # when personal data would be written, then the command refuses, saying why
    out = run(["ingest", "-"], env, json.dumps(created_event(tenant)) + "\n")
    assert out.returncode == 1 and "C360_DATA_KEY is unset" in out.stderr
    assert not (tmp_path / "dev-data-key").exists()


def test_events_of_an_erased_tenant_are_rejected_lines_and_the_rest_applies(
    database_url: str, tmp_path: Path
) -> None:
    from tests.conftest import DATA_KEY

    env = clean_env(C360_DATABASE_URL=database_url, C360_DATA_KEY=DATA_KEY)
    gone, other = f"gone-{uuid.uuid4().hex[:6]}", f"kept-{uuid.uuid4().hex[:6]}"
    assert run(["ingest", "-"], env, json.dumps(created_event(gone)) + "\n").returncode == 0
    assert run(["erase", "--tenant", gone], env).returncode == 0
    lines = [created_event(gone), created_event(gone), created_event(other)]
    out = run(["ingest", "-"], env, "\n".join(json.dumps(x) for x in lines) + "\n")
    assert out.returncode == 2, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "applied=1 duplicate=0 rejected=2"
    assert [ln.split(":")[0] for ln in out.stderr.strip().splitlines()] == ["line 1", "line 2"]
    assert "erased" in out.stderr


async def test_kafka_topics_creates_every_topic_of_the_one_list_with_the_given_sizes() -> None:
    # given a fresh broker of its own (the session's already has the gateway's topics)
    from aiokafka.admin import AIOKafkaAdminClient

    from customer360.devstack import embedded_kafka
    from customer360.lifecycle.config import CONSUMED_EVENT_TYPES

    with embedded_kafka() as bootstrap:
        # when an operator creates the topics for a cluster
        out = run(
            ["kafka-topics", "--partitions", "4", "--dlq-partitions", "2"],
            clean_env(C360_KAFKA_BOOTSTRAP=bootstrap),
        )
        assert out.returncode == 0, out.stderr
        again = run(["kafka-topics"], clean_env(C360_KAFKA_BOOTSTRAP=bootstrap))
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics()
        finally:
            await admin.close()
    # then each consumed type has its topic and dead-letter topic, beside the audit topic
    partitions = {t["topic"]: len(t["partitions"]) for t in described}
    expected = {t: 4 for t in CONSUMED_EVENT_TYPES}
    expected |= {f"{t}.dlq": 2 for t in CONSUMED_EVENT_TYPES}
    expected["audit.lifecycle.updated"] = 4
    assert {t: n for t, n in partitions.items() if t in expected} == expected
    assert again.returncode == 0 and "none (all exist)" in again.stdout
