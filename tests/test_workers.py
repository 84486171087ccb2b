"""Workers of `c360 serve --workers N` never outlive their supervisor (a SIGKILLed one
cannot stop them itself)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import httpx

from customer360.devstack import free_port
from customer360.settings import Settings
from tests.conftest import serve_env, until_healthy

ROOT = Path(__file__).resolve().parents[1]


def children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_workers_stop_when_their_supervisor_is_killed(settings: Settings) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "customer360.cli", "serve", "--port", str(port), "--workers", "2"),
        env=serve_env(settings),
        cwd=ROOT,
    )
    workers: set[int] = set()
    try:
        # given a server with two workers answering
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            await until_healthy(http)
        workers = {p for p in children(proc.pid) if "spawn_main" in _cmdline(p)}
        assert len(workers) == 2, workers
        # when its supervisor is killed, with no chance to stop them
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        # then the workers stop too, and nothing answers on the port any more
        deadline = time.monotonic() + 20
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert not any(alive(w) for w in workers)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2) as http:
            try:
                await http.get("/healthz")
                answered = True
            except httpx.TransportError:
                answered = False
        assert not answered
    finally:
        for w in workers:
            if alive(w):
                os.kill(w, signal.SIGKILL)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


# A supervisor that starts one worker which ignores SIGTERM (a stop that hangs), prints the
# worker's pid and waits to be killed.
STUCK = """
import multiprocessing, signal, sys, time
from customer360.workers import end_with_supervisor

def worker():
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    end_with_supervisor(check_seconds=0.1, hard_exit_seconds=1.0)
    time.sleep(60)

if __name__ == "__main__":
    multiprocessing.set_start_method("spawn")
    p = multiprocessing.Process(target=worker)
    p.start()
    print(p.pid, flush=True)
    time.sleep(60)
"""


async def test_a_worker_whose_stop_hangs_exits_all_the_same(tmp_path: Path) -> None:
    script = tmp_path / "stuck.py"
    script.write_text(STUCK)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdout=asyncio.subprocess.PIPE, cwd=ROOT
    )
    assert proc.stdout is not None
    worker = int((await proc.stdout.readline()).decode())
    try:
        await asyncio.sleep(0.5)
        # when the supervisor is killed and the worker ignores the stop it is asked for
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        # then the worker exits anyway, soon after its hard-exit time
        deadline = time.monotonic() + 10
        while alive(worker) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not alive(worker)
    finally:
        if alive(worker):
            os.kill(worker, signal.SIGKILL)


# A supervisor that waits for its one worker, whose stop begins and then hangs (a backend
# that no longer answers), and prints how the worker ended.
HANGING_STOP = """
import multiprocessing, time
from customer360.workers import stopping

def worker():
    stopping(hard_exit_seconds=1.0)
    time.sleep(60)

if __name__ == "__main__":
    multiprocessing.set_start_method("spawn")
    p = multiprocessing.Process(target=worker)
    p.start()
    p.join()
    print(p.exitcode, flush=True)
"""


async def test_a_worker_whose_stop_hangs_ends_and_its_supervisor_with_it(tmp_path: Path) -> None:
    script = tmp_path / "hanging.py"
    script.write_text(HANGING_STOP)
    # given a supervisor waiting for a worker whose stop has begun and hangs
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdout=asyncio.subprocess.PIPE, cwd=ROOT
    )
    try:
        # then the worker ends after its deadline (exit code 1), and the supervisor's wait
        out, _ = await asyncio.wait_for(proc.communicate(), 20)
        assert out.decode().strip().splitlines()[-1] == "1"
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
