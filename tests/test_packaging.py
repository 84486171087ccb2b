"""The layout DEVELOPERS.md fixes: src/ is the package customer360, every folder listed."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_packages_match_the_folders_under_src() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    on_disk = {"customer360"} | {
        "customer360." + ".".join(p.relative_to(ROOT / "src").parts)
        for p in (ROOT / "src").rglob("*")
        if p.is_dir() and (p / "__init__.py").exists()
    }
    assert listed == on_disk
    assert config["tool"]["setuptools"]["package-dir"] == {"customer360": "src"}


def test_nothing_we_own_is_importable_under_a_bare_name() -> None:
    import importlib.util

    for name in ("data", "events", "auth", "lifecycle"):
        spec = importlib.util.find_spec(name)
        assert spec is None or "site-packages" in str(spec.origin or ""), name
