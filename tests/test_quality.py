"""Static checks run with the suite, so the README's one test command covers them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(*cmd: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_ruff_lints_clean() -> None:
    paths = ("src", "tests", "bench", "scripts")
    out = _run(str(BIN / "ruff"), "check", "--output-format", "concise", *paths)
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_is_strict_and_clean_on_src(tmp_path: Path) -> None:
    # mypy resolves the package by name; src/ is published as customer360 through a link.
    (tmp_path / "customer360").symlink_to(ROOT / "src")
    out = _run(
        str(BIN / "mypy"),
        "--cache-dir",
        str(ROOT / ".mypy_cache"),
        "-p",
        "customer360",
        env={"MYPYPATH": str(tmp_path)},
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_layers_import_only_what_they_may() -> None:
    exe = shutil.which("lint-imports", path=str(BIN)) or "lint-imports"
    out = _run(exe, "--no-cache")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Contracts: 3 kept, 0 broken" in out.stdout
