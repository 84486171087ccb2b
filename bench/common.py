"""What the benchmarks share: backends, the bench database, a served gateway, tokens."""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import multiprocessing
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from alembic.util.exc import CommandError

CACHE = Path.home() / ".cache" / "c360-bench"
ROOT = Path(__file__).resolve().parents[1]


def source_at(rev: str) -> tuple[str, Path]:
    """The gateway's code at git revision `rev` (its short commit, and a folder holding it as
    a `customer360` package), unpacked once under the cache folder."""
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "--verify", f"{rev}^{{commit}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    where = CACHE / "src" / sha
    package = where / "customer360"
    if not (package / "__init__.py").exists():
        package.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", sha, "src"], capture_output=True, check=True
        ).stdout
        subprocess.run(
            ["tar", "-x", "-C", str(package), "--strip-components=1"], input=archive, check=True
        )
    return sha, where


def _pin() -> str:
    """C360_BENCH_REV=<rev>: this process, `c360 serve` and every helper process run the
    gateway's code of that commit, not the shared work tree's, which others may be changing
    mid-run. Before the first import of customer360, and ahead of the editable install (whose
    finder Python consults last)."""
    rev = os.environ.get("C360_BENCH_REV")
    if not rev:
        return "work tree"
    sha, where = source_at(rev)
    sys.path.insert(0, str(where))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(where), os.environ.get("PYTHONPATH")])
    )
    return sha


SERVED = _pin()  # what the figures are of: a short commit, or "work tree"

import httpx  # noqa: E402
from sqlalchemy import make_url, text  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

from customer360.auth.tokens import issue_dev_token  # noqa: E402
from customer360.data.crypto import Keyring  # noqa: E402
from customer360.data.db import make_engine  # noqa: E402
from customer360.data.keys import TenantKeys  # noqa: E402
from customer360.data.migrate import grant_application_role, upgrade_async  # noqa: E402
from customer360.data.seed import seed, tenant_has_customers  # noqa: E402
from customer360.devstack import free_port  # noqa: E402

SECRET = "bench-secret-0123456789-0123456789-0123456789"
DATA_KEY = "bench:" + base64.b64encode(b"b" * 32).decode()
KEYS = TenantKeys(Keyring.parse(DATA_KEY))

# A pinned commit gets a database of its own, migrated by that commit: the work tree's newer
# migrations (applied to c360_bench by others' runs) are unknown to older code, and others'
# runs change c360_bench's rows. C360_BENCH_DB names one for commits of the same migrations
# compared in turn (bench/cpu.py): each database's own state (its size, its dead rows) can
# move a write's cost, which two databases would add to the comparison.
DATABASE = os.environ.get("C360_BENCH_DB") or (
    "c360_bench" if SERVED == "work tree" else f"c360_bench_{SERVED}"
)


def backend_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--database",
        default=os.environ.get(
            "C360_BENCH_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
        ),
    )
    ap.add_argument(
        "--redis", default=os.environ.get("C360_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    )


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def bench_database(server_url: str, tenant: str, customers: int) -> str:
    """The bench database, created and migrated if needed, with `tenant` seeded once."""
    url = make_url(server_url).set(database=DATABASE).render_as_string(hide_password=False)
    admin = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as c:
        query = text("SELECT 1 FROM pg_database WHERE datname = :d")
        if not (await c.execute(query, {"d": DATABASE})).first():
            await c.execute(text(f'CREATE DATABASE "{DATABASE}"'))
    await admin.dispose()
    try:
        await upgrade_async(url)
    except CommandError as exc:
        # Migrated ahead by a later commit (bench/cpu.py A B on one database): migrations only
        # add, so an earlier commit runs on it as is.
        if "Can't locate revision" not in str(exc):
            raise
    engine = make_engine(url, keys=KEYS)
    try:
        if not await tenant_has_customers(engine, tenant):
            await seed(engine, tenant, customers, batch=5000)
    finally:
        await engine.dispose()
    await _vacuum_if_nobody_does(url)
    return url


async def relayed(database_url: str, seconds: float, *, kafka: bool = False) -> bool:
    """Until the server's relay has published what was waiting, to every sink it runs: a
    freshly seeded database holds one event per customer, and a run that measured while the
    relay worked through 50,000 of them would be a run of the relay (found with the counters
    of bench/run.py: S4 with 89 rows a drain, PostgreSQL 916 us a change against 249). The
    write benchmarks run without Kafka, so the Kafka sink's backlog grows with each of them
    until bench/live.py serves with Kafka: its relay then spent a third of the gateway's CPU
    publishing 185,000 old events while live delivery was measured. True if it waited."""
    engine = create_async_engine(database_url)
    kafka_too = " OR published_at IS NULL" if kafka else ""
    pending = text(
        "SELECT count(*) FROM outbox "
        f"WHERE redis_published_at IS NULL OR webhooks_fanned_at IS NULL{kafka_too}"
    )
    try:
        deadline, waited = time.monotonic() + seconds, False
        while time.monotonic() < deadline:
            async with engine.connect() as c:
                left = (await c.execute(pending)).scalar_one()
            if not left:
                return waited
            waited = True
            await asyncio.sleep(1)
        print(f"warning: the relay still had {left:,} rows to publish", flush=True)
        return waited
    finally:
        await engine.dispose()


async def _vacuum_if_nobody_does(url: str) -> None:
    """This box's PostgreSQL runs with autovacuum off (its CI configuration), and the bench
    database keeps every earlier run's dead rows: the seal queue and the history indexes
    would grow slower run after run, which no production server (autovacuum on) sees."""
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as c:
            if (await c.execute(text("SHOW autovacuum"))).scalar() == "off":
                await c.execute(text("VACUUM (ANALYZE)"))
    finally:
        await engine.dispose()


APP_ROLE = "c360_bench_app"


async def app_url(owner_url: str) -> str:
    """The gateway's own connection, as in production: a role that owns nothing and is not a
    superuser, so row-level security applies (and is paid for) in every figure."""
    admin = create_async_engine(owner_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as c:
        query = text("SELECT 1 FROM pg_roles WHERE rolname = :r")
        if not (await c.execute(query, {"r": APP_ROLE})).first():
            await c.execute(text(f"CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS"))
    await admin.dispose()
    url = make_url(owner_url).set(username=APP_ROLE).render_as_string(hide_password=False)
    await asyncio.to_thread(grant_application_role, owner_url, url)
    return url


def token(tenant: str, sub: str = "bench") -> str:
    return issue_dev_token(
        SECRET,
        sub=sub,
        tenant=tenant,
        roles=["ROLE_ACCOUNT_MANAGER"],
        issuer="c360-dev",
        audience="customer360",
        ttl=3600,
    )


def user_tokens(tenant: str, n: int = 200, prefix: str = "bench-user") -> list[str]:
    """`n` account managers of `tenant`, one `sub` each: whatever the gateway keeps per user
    (the hourly update budget, verified tokens) sees many users, as in production."""
    return [token(tenant, sub=f"{prefix}-{k}") for k in range(n)]


@contextlib.asynccontextmanager
async def serving(
    database_url: str,
    redis_url: str,
    *,
    kafka: str = "off",
    workers: int = 1,
    raise_rate_limit: bool = True,
    under: Sequence[str] = (),
    ready_seconds: float = 30,
) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """`c360 serve` in a subprocess beside the benchmark, ready when yielded.

    `raise_rate_limit=False` keeps the production budget (1,000 updates per user and hour):
    for callers that spread their writes over many users (`user_tokens`). `under`: a command
    the server runs under (valgrind, bench/instructions.py)."""
    port = free_port()
    env = {
        **os.environ,
        "C360_DATABASE_URL": await app_url(database_url),
        "C360_REDIS_URL": redis_url,
        "C360_KAFKA_BOOTSTRAP": kafka,
        "C360_JWT_SECRET": SECRET,
        "C360_DATA_KEY": DATA_KEY,
        "C360_LOG_LEVEL": "WARNING",
        "C360_RATE_LIMIT": "100000000",  # one bench user makes far more than 1000 updates
        "C360_WS_MAX_SOCKETS_PER_PRINCIPAL": "100000",  # bench/live.py: 1,000 sockets, one user
    }
    if not raise_rate_limit:
        env.pop("C360_RATE_LIMIT")
    proc = subprocess.Popen(  # noqa: ASYNC220 - Popen returns at once; the server runs beside
        [
            *under,
            sys.executable,
            "-m",
            "customer360.cli",
            "serve",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base) as client:
            for _ in range(int(ready_seconds * 10)):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get("/readyz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        if await relayed(database_url, ready_seconds * 20, kafka=kafka != "off"):
            await _vacuum_if_nobody_does(database_url)  # the published rows' old versions
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:  # never left running behind a failed benchmark
            proc.kill()
            proc.wait()


# --- wrk -----------------------------------------------------------------------------------

ID_SLOT = "@@ID@@"  # where a random id goes in a request body template

# Appended to every script: a response that is not 200, or whose body carries GraphQL
# "errors", is an error even though wrk itself only counts non-2xx; `done` sums the threads.
WRK_ERRORS_LUA = """
local c360_threads = {}
function setup(thread) table.insert(c360_threads, thread) end
function response(status, headers, body)
  if status ~= 200 or string.find(body, '"errors"', 1, true) then errors = (errors or 0) + 1 end
end
function done(summary, latency, requests)
  local n = 0
  for _, t in ipairs(c360_threads) do n = n + (t:get("errors") or 0) end
  io.write(string.format("c360-errors %d\\n", n))
end
"""


def lua_strings(values: Sequence[str]) -> str:
    """A Lua table constructor of long strings (no escaping to get wrong)."""
    return "{" + ",".join(f"[==[{v}]==]" for v in values) + "}"


def wrk_script(body: str, ids: Sequence[str] = (), tokens: Sequence[str] = ()) -> str:
    """A POST /graphql per request: `body` with a random id at `ID_SLOT`, and a random token
    of `tokens` (a user per request, as many clients would be), errors counted. A body
    without the slot is sent as it is, whatever `ids` holds."""
    pre, slot, post = body.partition(ID_SLOT)
    ids = ids if slot else ()
    return (
        f"""
math.randomseed(os.time())
local ids = {lua_strings(ids)}
local tokens = {lua_strings(tokens)}
local pre, post = [==[{pre}]==], [==[{post}]==]
request = function()
  local headers = {{["Content-Type"] = "application/json"}}
  if #tokens > 0 then headers["Authorization"] = "Bearer " .. tokens[math.random(#tokens)] end
  local body = pre
  if #ids > 0 then body = pre .. ids[math.random(#ids)] .. post end
  return wrk.format("POST", "/graphql", headers, body)
end
"""
        + WRK_ERRORS_LUA
    )


def graphql_body(query: str, variables: dict[str, object] | None = None) -> str:
    return json.dumps({"query": query, **({"variables": variables} if variables else {})})


@dataclass(frozen=True, slots=True)
class WrkResult:
    rate: float  # requests/s over the measured seconds
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int  # socket errors, non-200, and 200s whose body has "errors"

    def line(self) -> str:
        return (
            f"{self.rate:,.0f}/s  p50 {self.p50_ms:.1f} ms  p99 {self.p99_ms:.1f} ms  "
            f"errors {self.errors} of {self.requests:,}"
        )


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _wrk_ms(out: str, label: str) -> float:
    m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s|m)\s*$", out, re.MULTILINE)
    return float(m.group(1)) * _UNIT_MS[m.group(2)] if m else float("nan")


def wrk(url: str, script: str, conc: int, seconds: int, threads: int = 1) -> WrkResult:
    """wrk (C, Debian's wrk package) keeps the load generator's cost small and equal for
    every server it drives. A script without WRK_ERRORS_LUA counts only wrk's own errors."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(script)
    try:
        out = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{conc}", f"-d{seconds}s", "--latency", "-s", f.name, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(f.name)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    lua = re.search(r"c360-errors (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = sum(int(g) for g in sockets.groups()) if sockets else 0
    # The script's count already holds the non-2xx; without it, wrk's count is all there is.
    errors += int(lua.group(1)) if lua else int(non2xx.group(1)) if non2xx else 0
    requests = int(total.group(1)) if total else 0
    if requests == 0:  # nothing came back in time (wrk then counts no error of its own)
        print(out, file=sys.stderr)
        errors = max(errors, conc)
    return WrkResult(
        rate=float(rate.group(1)) if rate else 0.0,
        p50_ms=_wrk_ms(out, "50%"),
        p99_ms=_wrk_ms(out, "99%"),
        requests=requests,
        errors=errors,
    )


# --- open model ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpenLoopResult:
    scheduled: int
    completed: int
    errors: int  # non-200, "errors" in the body, broken connections, unanswered at the end
    seconds: float  # first scheduled send to last response
    latencies: list[float]  # seconds from each request's scheduled send to its response
    send_lag_p99: float  # seconds the client itself sent late: the schedule's own error
    connections: int

    def line(self) -> str:
        ms = lambda p: f"{pct(self.latencies, p) * 1000:.1f} ms"  # noqa: E731
        return (
            f"achieved {self.completed / self.seconds:,.0f}/s ({self.completed:,} of "
            f"{self.scheduled:,})  p50 {ms(50)}  p99 {ms(99)}  p99.9 {ms(99.9)}  "
            f"errors {self.errors}  (send lag p99 {self.send_lag_p99 * 1000:.1f} ms, "
            f"{self.connections} connections)"
        )


def _raw_post(host: str, port: int, path: str, body: bytes, bearer: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {bearer}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    if length is None:  # the gateway always sends one; anything else is a failure here
        raise ConnectionError("response without Content-Length")
    return status, await reader.readexactly(int(length.group(1)))


async def _open_loop(
    url: str, body: str, tokens: list[str], rate: float, seconds: float, conns: int
) -> OpenLoopResult:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    requests = [_raw_post(host, port, parts.path, body.encode(), t) for t in tokens]
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
    total = round(rate * seconds)
    latencies: list[float] = []  # one per response, good or bad
    bad = 0  # answered, but not 200 or with "errors"
    failed = 0  # no answer: the connection broke under it
    finished = asyncio.Event()

    async def connection() -> None:
        nonlocal bad, failed
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                due, raw = item
                try:
                    writer.write(raw)
                    status, payload = await _read_response(reader)
                except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
                    failed += 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                else:
                    latencies.append(time.perf_counter() - due)
                    bad += status != 200 or b'"errors"' in payload
                if len(latencies) + failed >= total:
                    finished.set()
        finally:
            writer.close()

    # A fixed set of kept-alive connections, as wrk2 has: an arrival that finds them all busy
    # waits in the queue, and its latency, counted from its scheduled send, shows the wait.
    # (Opening a connection per late arrival instead turned a 0.2 s pause of the server into
    # hundreds of handshakes for it to serve while catching up.)
    workers = [asyncio.create_task(connection()) for _ in range(conns)]
    await asyncio.sleep(0.2)  # connected before the clock starts
    lags: list[float] = []
    start = time.perf_counter() + 0.05
    for k in range(total):
        due = start + k / rate
        wait = due - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        lags.append(time.perf_counter() - due)
        queue.put_nowait((due, random.choice(requests)))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(finished.wait(), 30)
    end = time.perf_counter()
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.wait(workers, timeout=5)
    for w in workers:
        w.cancel()
    unanswered = total - len(latencies) - failed
    return OpenLoopResult(
        scheduled=total,
        completed=len(latencies),
        errors=bad + failed + unanswered,
        seconds=end - start,
        latencies=latencies,
        send_lag_p99=pct(lags, 99),
        connections=len(workers),
    )


def open_loop(
    url: str, body: str, tokens: list[str], rate: float, seconds: float, conns: int = 64
) -> OpenLoopResult:
    """POSTs of `body` to `url` at a fixed arrival rate, sent on schedule whatever the server
    does (no coordinated omission), latency counted from the scheduled send. Raw HTTP/1.1 on
    asyncio streams: an HTTP library's own cost at 1,000/s would take the server's CPU."""
    gc.disable()  # a collection pause here would be charged to the server
    with contextlib.suppress(ImportError):
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(_open_loop(url, body, tokens, rate, seconds, conns))
    return asyncio.run(_open_loop(url, body, tokens, rate, seconds, conns))


async def open_loop_in_process(
    url: str, body: str, tokens: list[str], rate: float, seconds: float, conns: int = 64
) -> OpenLoopResult:
    """`open_loop` in its own process: its schedule never waits on this one's event loop."""
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as pool:
        return await asyncio.get_running_loop().run_in_executor(
            pool, open_loop, url, body, tokens, rate, seconds, conns
        )


# --- where the CPU goes --------------------------------------------------------------------


# In a cpu_split group: the whole machine's busy time, every process, the kernel's network
# stack and PostgreSQL's own background processes included.
BOX = "*"
Who = int | str | tuple[int]


def _cpu_of(names: dict[str, Who]) -> dict[str, dict[int, float]]:
    """CPU seconds so far of each process of each named group: an int is a process with its
    descendants, a 1-tuple a process alone (the benchmark itself, whose child is the
    gateway), a str every process of that name, BOX the machine."""
    import psutil  # only the benchmarks need it

    out: dict[str, dict[int, float]] = {k: {} for k in names}
    for label, who in names.items():
        if who == BOX:
            t = psutil.cpu_times()
            out[label][0] = sum(t) - t.idle - getattr(t, "iowait", 0.0)
            continue
        if isinstance(who, tuple):
            procs = [psutil.Process(who[0])]
        elif isinstance(who, int):
            root = psutil.Process(who)
            procs = [root, *root.children(recursive=True)]
        else:
            procs = [p for p in psutil.process_iter(["name"]) if p.info["name"] == who]
        for p in procs:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                # With the children it has reaped: PostgreSQL's parallel workers and any
                # backend that ended live shorter than the block, and their CPU lands in the
                # postmaster's children times once they exit.
                alone = isinstance(who, tuple)
                reaped = 0.0 if alone else t.children_user + t.children_system
                out[label][p.pid] = t.user + t.system + reaped
    return out


@contextlib.contextmanager
def cpu_split(names: dict[str, Who]) -> Iterator[dict[str, float]]:
    """CPU seconds each group spent inside the block, filled in when it ends. Processes alive
    at both ends count, with the children they reaped meanwhile (PostgreSQL's postmaster
    reaps its parallel workers: before, their CPU went uncounted)."""
    before = _cpu_of(names)
    spent: dict[str, float] = {}
    yield spent
    after = _cpu_of(names)
    for k in names:
        then = before[k]
        spent[k] = sum(t - then[pid] for pid, t in after[k].items() if pid in then)
