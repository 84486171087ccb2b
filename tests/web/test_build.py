"""The built tab (src/web, committed: a fresh clone needs no Node) equals a fresh build from
the locked sources (web/package-lock.json, `npm ci`), typechecks, and is served as it should."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest

from customer360.app import create_app
from customer360.settings import Settings
from customer360.webapp import CSP, WEB
from tests.helpers import npm_installed

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ROOT / "web"


@pytest.fixture(scope="session")
def web_sources() -> Path:
    """web/ with its locked packages installed (`npm ci`, once per lock)."""
    return npm_installed(SOURCES)


def test_the_committed_build_equals_a_fresh_one_and_typechecks(
    web_sources: Path, tmp_path: Path
) -> None:
    out = tmp_path / "web"
    subprocess.run(["node", "build.mjs", str(out)], cwd=web_sources, check=True, timeout=120)
    fresh = {p.name: p.read_bytes() for p in out.iterdir()}
    committed = {p.name: p.read_bytes() for p in WEB.iterdir()}
    assert sorted(committed) == sorted(fresh), "run: cd web && npm ci && npm run build"
    for name, data in fresh.items():
        assert committed[name] == data, f"src/web/{name} is stale: cd web && npm run build"
    # small, and nothing fetched from elsewhere (fonts, CDN, analytics)
    assert sum(map(len, fresh.values())) < 150_000
    assert b"http" not in fresh["index.html"] and b"http" not in fresh["app.css"]
    urls = set(re.findall(rb"https?://[\w./-]+", fresh["app.js"]))
    assert {u for u in urls if not u.startswith(b"http://www.w3.org/")} == set(), urls
    tsc = subprocess.run(
        ["node", "node_modules/typescript/bin/tsc", "--noEmit", "-p", "."],
        cwd=web_sources,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tsc.returncode == 0, tsc.stdout + tsc.stderr


def client(settings: Settings) -> httpx.AsyncClient:
    """The gateway's routes alone (no lifespan: nothing is connected)."""
    transport = httpx.ASGITransport(app=create_app(settings))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway")


async def test_the_tab_is_served_with_a_strict_csp_in_development_only_unless_enabled(
    settings: Settings,
) -> None:
    with_tab = client(settings)
    page = await with_tab.get("/app/")
    assert page.status_code == 200 and '<script type="module" src="app.js">' in page.text
    assert page.headers["content-security-policy"] == CSP
    assert "'unsafe-inline'" not in CSP and "script-src 'self';" in CSP
    assert "connect-src 'self' ws: wss:" in CSP
    assert (await with_tab.get("/app/index.html")).status_code == 200
    asset = await with_tab.get("/app/app.js")
    assert asset.status_code == 200 and "javascript" in asset.headers["content-type"]
    assert asset.headers["x-content-type-options"] == "nosniff"
    moved = await with_tab.get("/app", follow_redirects=False)
    assert (moved.status_code, moved.headers["location"]) == (308, "/app/")
    assert (await with_tab.get("/app/%2e%2e/settings.py")).status_code == 404
    # production: off unless C360_WEB_APP=1
    assert Settings(_env_file=None, env="production").web_app_enabled is False  # type: ignore[call-arg]
    assert Settings(_env_file=None, env="production", web_app=True).web_app_enabled  # type: ignore[call-arg]
    without = client(settings.model_copy(update={"web_app": False}))
    assert (await without.get("/app/")).status_code == 404
