"""The committed schema matches the code, and does not break the public contract."""

from __future__ import annotations

from pathlib import Path

import graphql

from customer360.gql.schema import build_schema

ROOT = Path(__file__).resolve().parents[2]
# The public contract sits beside the repository (../shared), in CI as on every machine.
CONTRACT = ROOT.parent / "shared" / "contract" / "schema.graphql"

# Nothing of the contract may be missing or changed incompatibly.
ALLOWED_BREAKS: set[tuple[str, str]] = set()


def normalised(sdl: str) -> str:
    return "\n".join(line.rstrip() for line in sdl.strip().splitlines())


def test_committed_schema_matches_the_code():
    ours = build_schema().as_str()
    committed = (ROOT / "schema.graphql").read_text()
    assert normalised(ours) == normalised(committed)


def test_no_breaking_change_against_the_contract():
    contract = graphql.build_schema(CONTRACT.read_text())
    ours = graphql.build_schema(build_schema().as_str())
    breaks = {(c.type.name, c.description) for c in graphql.find_breaking_changes(contract, ours)}
    assert breaks == ALLOWED_BREAKS


def test_no_dangerous_change_against_the_contract():
    contract = graphql.build_schema(CONTRACT.read_text())
    ours = graphql.build_schema(build_schema().as_str())
    dangerous = [
        (c.type.name, c.description) for c in graphql.find_dangerous_changes(contract, ours)
    ]
    assert dangerous == []


def test_the_readme_documents_are_valid_against_the_schema():
    import re

    schema = graphql.build_schema((ROOT / "schema.graphql").read_text())
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```graphql\n(.*?)```", readme, re.S)
    assert blocks
    for block in blocks:
        errors = graphql.validate(schema, graphql.parse(block))
        assert errors == [], (block, errors)
