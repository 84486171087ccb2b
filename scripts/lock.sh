#!/usr/bin/env bash
# Refreshes the dependency lock (requirements.txt, requirements-dev.txt) from pyproject.toml with uv:
#   .venv/bin/uv --version && bash scripts/lock.sh             # after editing pyproject.toml
#   bash scripts/lock.sh --upgrade                             # move every pin to the newest allowed
# Installs never resolve: the README's commands, .ci/run and the Dockerfile install these files.
set -euo pipefail
cd "$(dirname "$0")/.."
uv=${UV:-.venv/bin/uv}
common=(--quiet --universal --python-version 3.11 --generate-hashes --no-header --annotation-style line)
# Everything a developer and CI install (the extras embedded, seed, tracing and dev).
"$uv" pip compile pyproject.toml --extra dev "${common[@]}" -o requirements-dev.txt "$@"
# The production image: runtime dependencies and tracing (off unless OTEL_* asks for it), at
# the very versions of the dev lock.
"$uv" pip compile pyproject.toml --extra tracing "${common[@]}" -c requirements-dev.txt -o requirements.txt "$@"
