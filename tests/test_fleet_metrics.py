"""/metrics of a server with several workers reports the whole server, whichever worker
answers the scrape, and each worker's CPU and memory (issue 13 item 7, metrics part)."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path

import httpx

from customer360.devstack import free_port
from customer360.settings import Settings
from tests.conftest import serve_env, until_healthy

ROOT = Path(__file__).resolve().parents[1]
HEALTHZ = re.compile(
    r'^c360_http_requests_total\{method="GET",route="/healthz",status="200"\} (\S+)$', re.M
)
MEMORY = re.compile(r'^c360_process_resident_memory_bytes\{pid="(\d+)"\} (\S+)$', re.M)


async def test_two_workers_report_one_server(settings: Settings) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "customer360.cli", "serve", "--port", str(port), "--workers", "2"),
        env=serve_env(settings),
        cwd=ROOT,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            await until_healthy(http)
            # given requests spread over both workers (new connections, one each)
            for _ in range(40):
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as one:
                    assert (await one.get("/healthz")).status_code == 200
            await asyncio.sleep(0.5)  # both workers sampled their CPU and memory by now
            # when /metrics is scraped again and again (any worker may answer)
            seen, pids = [], set()
            for _ in range(8):
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as one:
                    text = (await one.get("/metrics")).text
                seen.append(float(HEALTHZ.search(text).group(1)))  # type: ignore[union-attr]
                pids |= {pid for pid, _ in MEMORY.findall(text)}
    finally:
        proc.terminate()
        await proc.wait()
    # then every scrape counts every request of the server, never one worker's share
    assert all(n >= 41 for n in seen), seen
    assert seen == sorted(seen)
    # and each worker's memory is there, by pid
    assert len(pids) == 2, pids
