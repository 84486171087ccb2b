"""The Customer360 tab in Debian's Chromium (playwright-core from tests/clients, driven by
driver.mjs one JSON command per line), against real gateways."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_token
from tests.live.test_live import consuming, producer  # noqa: F401  (the Kafka fixtures)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SCREENSHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


class Page:
    def __init__(self, browser: Browser, name: str, base: str) -> None:
        self.browser, self.name, self.base = browser, name, base

    async def call(self, method: str, *args: Any) -> Any:
        return await self.browser.send("call", page=self.name, method=method, args=list(args))

    async def eval(self, fn: str, arg: Any = None) -> Any:
        return await self.browser.send("eval", page=self.name, fn=fn, arg=arg)

    async def sign_in(self, token: str, path: str = "/app/") -> None:
        """Opens the tab by its sign-in link and waits until it is live."""
        await self.call("goto", f"{self.base}{path}#token={token}")
        await self.live()

    async def live(self, timeout: float = 10) -> None:
        """Waits until the header says the socket is up (saying what it shows otherwise)."""
        try:
            await self.wait('[data-link="live"]', timeout=timeout)
        except AssertionError as exc:
            shown = await self.eval(
                "() => { const e = document.querySelector('[data-link]');"
                " return e ? [e.dataset.link, e.dataset.closeCode, e.textContent] :"
                " document.body.innerText.slice(0, 300) }"
            )
            sockets = await self.browser.send("sockets", page=self.name)
            raise AssertionError(f"not live: {shown} {await self.problems()} {sockets}") from exc

    async def paste_sign_in(self, token: str, path: str = "/app/") -> None:
        """Signs in as a person pasting a token into the sign-in form."""
        await self.call("goto", f"{self.base}{path}")
        await self.call("fill", "#token", f"Bearer {token}")
        await self.call("click", "main.signin button[type=submit]")
        await self.live()

    async def wait(self, selector: str, state: str = "visible", timeout: float = 10) -> None:
        await self.call("waitForSelector", selector, {"state": state, "timeout": timeout * 1000})

    async def until(self, fn: str, arg: Any = None, timeout: float = 5) -> None:
        """Polls `fn(arg)` in the page until it is truthy (the page's CSP forbids the string
        evaluation of waitForFunction: a strict CSP at work)."""
        deadline = time.monotonic() + timeout
        while not await self.eval(fn, arg):
            assert time.monotonic() < deadline, f"timed out: {fn}"
            await asyncio.sleep(0.05)

    async def rows(self) -> list[str]:
        ids: list[str] = await self.eval(
            "() => [...document.querySelectorAll('tr[data-customer-id]')]"
            ".map(r => r.dataset.customerId)"
        )
        return ids

    async def texts(self, selector: str) -> list[str]:
        got: list[str] = await self.eval(
            "(s) => [...document.querySelectorAll(s)].map(e => e.textContent.trim())", selector
        )
        return got

    async def count(self, selector: str) -> int:
        n: int = await self.eval("(s) => document.querySelectorAll(s).length", selector)
        return n

    async def intercept(self, match: str, **what: Any) -> None:
        """The page's next GraphQL POST containing `match`: `before` (a fetch made from
        the driver first: someone else's write) and/or `fulfill` (a canned answer)."""
        await self.browser.send("intercept", page=self.name, match=match, **what)

    async def problems(self) -> list[str]:
        got: list[str] = await self.browser.send("problems", page=self.name)
        return got

    async def screenshot(self, name: str, tmp: Path, *, full: bool = True) -> None:
        """Into the test's folder; into docs/screenshots too when C360_WEB_SCREENSHOTS=1."""
        path = tmp / f"{name}.png"
        await self.call("screenshot", {"path": str(path), "fullPage": full})
        assert path.stat().st_size > 5000
        if os.environ.get("C360_WEB_SCREENSHOTS") == "1":
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, SCREENSHOTS / path.name)


class Browser:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[Any]] = {}
        self.reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        assert self.proc.stdout is not None
        first = await asyncio.wait_for(self.proc.stdout.readline(), 30)
        assert json.loads(first) == {"ready": True}, first
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            answer = json.loads(line)
            fut = self.waiting.pop(answer["id"], None)
            if fut is None or fut.done():
                continue
            if answer["ok"]:
                fut.set_result(answer["value"])
            else:
                fut.set_exception(AssertionError(answer["error"]))
        for fut in self.waiting.values():
            if not fut.done():
                fut.set_exception(AssertionError("the browser driver ended"))

    async def send(self, op: str, **kw: Any) -> Any:
        assert self.proc.stdin is not None
        n = next(self.ids)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting[n] = fut
        self.proc.stdin.write((json.dumps({"id": n, "op": op, **kw}) + "\n").encode())
        await self.proc.stdin.drain()
        return await asyncio.wait_for(fut, 60)

    async def page(self, base: str) -> Page:
        name = f"p{next(self.ids)}"
        await self.send("open", page=name)
        return Page(self, name, base)


@pytest.fixture(scope="session")
async def browser(node_clients: Path) -> AsyncIterator[Browser]:
    assert Path(CHROMIUM).exists(), "Debian's Chromium is needed: apt-get install chromium"
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(HERE / "driver.mjs"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "CHROMIUM": CHROMIUM},
    )
    b = Browser(proc)
    try:
        await b.start()
        yield b
        await b.send("quit")
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


@pytest.fixture
async def pages(browser: Browser) -> AsyncIterator[list[Page]]:
    """The pages a test opened; closed after it, each checked for console and page errors
    (a CSP violation is one)."""
    opened: list[Page] = []
    yield opened
    problems = {p.name: await p.problems() for p in opened}
    for p in opened:
        await browser.send("close", page=p.name)
    # a socket cut by a gateway restart is logged by Chromium itself; nothing else may be
    unexpected = {
        k: [m for m in v if "WebSocket connection" not in m and "ERR_CONNECTION_REFUSED" not in m]
        for k, v in problems.items()
    }
    assert not any(unexpected.values()), unexpected


@pytest.fixture
def open_page(browser: Browser, pages: list[Page]) -> Any:
    async def make(base: str) -> Page:
        page = await browser.page(base)
        pages.append(page)
        return page

    return make


def token_for(tenant: str, role: str, sub: str | None = None) -> str:
    return make_token(sub or f"{role.lower()}-1", tenant, (f"ROLE_{role}",))
