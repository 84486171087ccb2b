#!/usr/bin/env python3
"""Audit a running gateway with tools nobody here wrote: schemathesis and graphql-http.

    TOKEN=$(.venv/bin/c360 token --sub fuzzer --tenant demo --role TENANT_ADMIN) \
        .venv/bin/python scripts/audit.py [BASE_URL]

Runs schemathesis on /openapi.json and on /graphql, then the graphql-http audit of
../shared/clients; exits 1 if any of them failed. The fuzzer WRITES to the token's tenant
(stages move, the stage configuration may be replaced): point it at development data only.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = ROOT.parent / "shared" / "clients"
HOOKS = Path(__file__).resolve().parent / "st_checks.py"
ST = str(Path(sys.executable).parent / "st")

# 5xx never; statuses, content types, headers and bodies as documented; invalid input,
# missing auth and undocumented methods refused. Not `positive_data_acceptance`: the contract
# refuses some schema-valid requests with documented statuses (stale If-Match 412, unknown
# stage 400, someone else's updated_by 403) where that check wants a 2xx.
OPENAPI_CHECKS = (
    "not_a_server_error,status_code_conformance,content_type_conformance,"
    "response_headers_conformance,response_schema_conformance,negative_data_rejection,"
    "missing_required_header,unsupported_method,allow_header_conformance,ignored_auth,"
    "no_internal_error"
)
# schemathesis' own GraphQL `not_a_server_error` counts every error with a `path` as a
# server error, so the contract's expected errors (NOT_FOUND, CONFLICT, FORBIDDEN...) would
# fail it; `no_internal_error` (st_checks.py) fails on 5xx and INTERNAL_SERVER_ERROR instead.
GRAPHQL_CHECKS = "response_schema_conformance,negative_data_rejection,no_internal_error"

_DATA = """{ customers(first: 20) { edges { node { id lifecycle { version } } } }
  lifecycleStageConfig { stages requiredReasonCodes } }"""


def token_subject(token: str) -> str:
    """The `sub` claim, unverified: only used to fill `updated_by` with a value it accepts."""
    payload = token.split(".")[1]
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    claims: dict[str, Any] = json.loads(raw)
    return str(claims["sub"])


def known_values(base_url: str, token: str) -> dict[str, list[Any]]:
    """Real ids, stages and versions of the token's tenant: random UUIDs only ever meet 404."""
    resp = httpx.post(
        f"{base_url}/graphql",
        json={"query": _DATA},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    resp.raise_for_status()
    data = resp.json()["data"]
    nodes = [e["node"] for e in data["customers"]["edges"]]
    config = data["lifecycleStageConfig"]
    versions = sorted({n["lifecycle"]["version"] for n in nodes} | {0, 1})
    return {
        "customers": [n["id"] for n in nodes],
        "stages": list(config["stages"]),
        "reasons": ["Low Engagement", *config["requiredReasonCodes"]],
        "versions": versions,
        "etags": [f'"{v}"' for v in versions],
        "subjects": [token_subject(token)],
    }


def write_config(directory: Path, values: dict[str, list[Any]]) -> Path:
    """A schemathesis.toml mixing the tenant's real values into generated ones."""
    bindings = {
        "customers": [
            "path.id",
            "Query.customer.id",
            "Mutation.updateLifecycleStage.input.customerId",
            "Mutation.updateLifecycleStages.inputs[*].customerId",
        ],
        "stages": [
            "body.stage",
            "Mutation.updateLifecycleStage.input.stage",
            "Mutation.updateLifecycleStages.inputs[*].stage",
            "Query.customers.filter.stage",
        ],
        "reasons": [
            "body.reason_code",
            "Mutation.updateLifecycleStage.input.reasonCode",
            "Mutation.updateLifecycleStages.inputs[*].reasonCode",
        ],
        "versions": [
            "body.expected_version",
            "Mutation.updateLifecycleStage.input.expectedVersion",
            "Mutation.updateLifecycleStages.inputs[*].expectedVersion",
        ],
        "etags": ["header.If-Match", "header.If-None-Match"],
        "subjects": ["body.updated_by"],
    }
    # no crash cache in the working tree; a failure is printed with its reproduction anyway
    lines: list[str] = ["[cache]", "enabled = false", ""]
    for name, entries in values.items():
        if entries:  # an empty dictionary is a config error; generated values then stand alone
            lines += [f"[dictionaries.{name}]", f"values = {json.dumps(entries)}", ""]
    lines.append("[parameters]")
    for name, keys in bindings.items():
        if values.get(name):
            # 0.7: most cases reach the real logic, the rest still probe the edges
            lines += [f'"{key}" = {{ dictionary = "{name}", probability = 0.7 }}' for key in keys]
    path = directory / "schemathesis.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def schemathesis_command(
    location: str,
    token: str,
    config: Path,
    *,
    max_examples: int,
    phases: str = "examples,coverage,fuzzing,stateful",
) -> list[str]:
    graphql = location.rstrip("/").endswith("/graphql")
    return [
        ST,
        "--config-file",
        str(config),
        "--no-color",
        "run",
        location,
        "--header",
        f"Authorization: Bearer {token}",
        "--checks",
        GRAPHQL_CHECKS if graphql else OPENAPI_CHECKS,
        "--max-examples",
        str(max_examples),
        "--phases",
        phases,
        "--generation-database",
        "none",
        # timing of data generation on a busy machine, not a property of the service
        "--suppress-health-check",
        "too_slow",
        "--request-timeout",
        "30",
    ]


def hooks_env() -> dict[str, str]:
    return {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS)}


def graphql_http_audit(url: str, token: str) -> int:
    """The graphql-http package's server audit, from a fresh copy of ../shared/clients."""
    with tempfile.TemporaryDirectory(prefix="c360-clients-") as tmp:
        clients = Path(tmp) / "clients"
        shutil.copytree(CLIENTS, clients, ignore=shutil.ignore_patterns("node_modules"))
        subprocess.run(
            ["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=clients, check=True
        )
        env = {**os.environ, "AUTH": f"Bearer {token}"}
        return subprocess.run(["node", "audit.mjs", url], cwd=clients, env=env).returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("base_url", nargs="?", default="http://127.0.0.1:8000")
    ap.add_argument("--max-examples", type=int, default=100, help="per operation and phase")
    args = ap.parse_args()
    base = args.base_url.rstrip("/")
    token = os.environ.get("TOKEN", "").removeprefix("Bearer ").strip()
    if not token:
        ap.error("set TOKEN to a token that may mutate (c360 token --role TENANT_ADMIN ...)")
    failed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="c360-st-") as tmp:
        config = write_config(Path(tmp), known_values(base, token))
        for name, location in (("openapi", f"{base}/openapi.json"), ("graphql", f"{base}/graphql")):
            print(f"== schemathesis {location}", flush=True)
            cmd = schemathesis_command(location, token, config, max_examples=args.max_examples)
            if subprocess.run(cmd, env=hooks_env()).returncode != 0:
                failed.append(f"schemathesis {name}")
    print(f"== graphql-http audit {base}/graphql", flush=True)
    if graphql_http_audit(f"{base}/graphql", token) != 0:
        failed.append("graphql-http audit")
    print("FAILED: " + ", ".join(failed) if failed else "all passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
