"""The single-tenant write ceiling inside PostgreSQL (issue 11), measured with pgbench.

    .venv/bin/python bench/ceiling/run.py [--seconds 20] [--repeat 2] [--only a,d,g3]

Builds a scratch template database `c360_ceiling_tpl` with the project's migrations and the
role grants of the gateway's non-owner role (`c360_ceiling_app`, created if missing), seeds
one tenant (bench/ceiling/seed.sql), then for every variant copies it to `c360_ceiling`,
applies the variant's DDL (scratch databases only: the prototypes in proto_*.sql, or a
trigger disabled) and runs 16 pgbench clients for --seconds on one tenant, as that role, with
row-level security. The write statement is the gateway's own text
(customer360.data.lifecycle._RECORD), with the variant's edits applied by name below; the
rest of the transaction is bench/ceiling/single.sql (bulk.sql: 100 changes per call).

While pgbench runs, a checker compares the stage summary with a GROUP BY over the status
table in one statement (one snapshot) every 0.5 s, and checks the replay property (a row
that becomes visible never has a `seq` at or below one already visible); the sealer or the
count folder of a prototype runs beside it. Afterwards: drained, checked again, and the
chain verified with the project's own `c360 audit verify` code.

Each variant runs under an exclusive flock on /tmp/c360-bench.lock, so it never overlaps
another benchmark on this machine that takes the same lock. Nothing outside the two scratch
databases and the role is touched. Figures go to docs/WRITE_PATH.md. The databases and the
role stay afterwards (for `--reuse-template` and inspection); remove them with
`dropdb -h 127.0.0.1 -U postgres c360_ceiling` (and `c360_ceiling_tpl`) and
`dropuser -h 127.0.0.1 -U postgres c360_ceiling_app`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import asyncpg

# These ceilings are of the write path as it was before the sealer (migration 0011 built the
# proposal): the variants edit that commit's write statement, so they run on its code
# (C360_BENCH_REV, bench/common.py). The sealer through the gateway: bench/run.py.
os.environ.setdefault("C360_BENCH_REV", "001e436")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: F401 - pins customer360 to that commit before its first import

from customer360.data import outbox
from customer360.data.audit import verify
from customer360.data.lifecycle import _RECORD
from customer360.data.migrate import grant_application_role, upgrade

HERE = Path(__file__).resolve().parent
LOCK = "/tmp/c360-bench.lock"  # the machine's agreed benchmark lock
TENANT = "ceiling"
APP = "c360_ceiling_app"
DB = "c360_ceiling"
TEMPLATE = "c360_ceiling_tpl"
BATCH = 100  # changes per bulk call
NULL_PARAMS = ("traceparent", "tracestate")
# Set by the lock statement's \gset in single.sql/bulk.sql.
GSET = {
    "ids",
    "customer_ids",
    "versions",
    "froms",
    "tos",
    "ats",
    "bys",
    "reasons",
    "sources",
    "config_versions",
    "events",
}
DEFINES = {
    "t": TENANT,
    "hours": "24",
    "topic": "audit.lifecycle.updated",
    "evsource": "urn:c360:lifecycle-gateway",
    "k_subjects": "{}",
    "k_keys": "{}",
    "k_fingerprints": "{}",
    "k_results": "{}",
}


@dataclass(frozen=True)
class Variant:
    name: str
    what: str
    script: str = "single"  # single.sql or bulk.sql
    counts: str = "row"  # row (today: the hot row) | none | deltas | link | sealer
    chain: str = "link"  # link (today: at commit) | off | sealer
    notify: str = "in"  # in (today: pg_notify in the write statement) | after (own statement)
    sync: bool = True  # synchronous_commit
    rate: int | None = None  # pgbench -R: transactions/s offered (default: as fast as it goes)
    key: bool = False  # repeated with --repeat


VARIANTS = [
    Variant("a", "today: the full transaction", key=True),
    Variant("b", "a without the stage_counts update", counts="none"),
    Variant("c", "a without the chain link trigger", chain="off"),
    Variant("d", "neither counts nor chain", counts="none", chain="off", key=True),
    Variant("n", "a, pg_notify after COMMIT instead of inside", notify="after", key=True),
    Variant("dn", "d, pg_notify after COMMIT", counts="none", chain="off", notify="after"),
    Variant("e", "a, bulk: 100 changes per transaction", script="bulk"),
    Variant("f", "a with synchronous_commit=off (diagnostic only)", sync=False),
    Variant("g1", "counts as deltas, folded every 0.25 s; chain today", counts="deltas", key=True),
    Variant("g2", "counts applied by the link step; chain today", counts="link", key=True),
    Variant(
        "g3", "sealer: chain + seq + counts after commit", counts="sealer", chain="sealer", key=True
    ),
    Variant(
        "g3n",
        "g3, pg_notify after COMMIT",
        counts="sealer",
        chain="sealer",
        notify="after",
        key=True,
    ),
    Variant(
        "g3e",
        "g3n, bulk: 100 changes per transaction",
        script="bulk",
        counts="sealer",
        chain="sealer",
        notify="after",
    ),
    Variant("g2n", "g2, pg_notify after COMMIT", counts="link", notify="after"),
    Variant(
        "g3e80",
        "g3e offered 8,000 changes/s (-R 80): does the sealer keep up?",
        script="bulk",
        counts="sealer",
        chain="sealer",
        notify="after",
        rate=80,
    ),
    Variant(
        "g3e100",
        "g3e offered 10,000 changes/s (-R 100)",
        script="bulk",
        counts="sealer",
        chain="sealer",
        notify="after",
        rate=100,
    ),
]


def _cte_span(sql: str, name: str) -> tuple[int, int]:
    """Where `name AS ( ... ),\n` is in the statement, parentheses matched."""
    start = sql.index(f"{name} AS (")
    depth, i = 0, sql.index("(", start)
    while True:
        depth += {"(": 1, ")": -1}.get(sql[i], 0)
        i += 1
        if depth == 0:
            break
    assert sql[i] == ",", f"{name} is not followed by another CTE"
    return start, i + 2  # past ",\n"


def record_sql(v: Variant) -> str:
    """The gateway's write statement, with the variant's edits; fails if the statement
    changed so that an edit no longer applies."""
    sql = "\n".join(
        line for line in _RECORD.text.splitlines() if not line.lstrip().startswith("--")
    )
    if v.counts != "row":
        c0, c1 = _cte_span(sql, "counts")
        if v.counts == "deltas":
            sql = (
                sql[:c0]
                + "counts AS (\n  INSERT INTO stage_count_deltas (tenant_id, stage, delta)\n"
                "  SELECT :t, stage, d FROM deltas\n),\n" + sql[c1:]
            )
        else:
            sql = sql[:c0] + sql[c1:]
            d0, d1 = _cte_span(sql, "deltas")
            sql = sql[:d0] + sql[d1:]
    # What the gateway sends as NULL here (no trace context when tracing is off): pgbench
    # variables cannot be NULL, so the literal goes in. Any other parameter must be one that
    # single.sql/bulk.sql or the -D list defines, or the statement changed: stop.
    for name in NULL_PARAMS:
        sql = re.sub(rf"(?<!:):{name}\b", "NULL", sql)
    unknown = set(re.findall(r"(?<!:):([a-z_]+)", sql)) - GSET - set(DEFINES)
    assert not unknown, f"the gateway's statement has new parameters: {unknown}"
    if v.notify == "after":
        woke = f"{outbox.WAKE} AS woken"
        assert sql.count(woke) == 1
        sql = sql.replace(woke, "NULL AS woken")
    return sql.strip() + ";"


def script(v: Variant) -> str:
    text = (HERE / f"{v.script}.sql").read_text()
    after = f"SELECT {outbox.WAKE};" if v.notify == "after" else ""
    return text.replace("@RECORD@", record_sql(v)).replace("@AFTER@", after)


def summary_sql(v: Variant) -> str | None:
    """The prototypes define c360_summary(); today's shape reads stage_counts."""
    return None if v.counts in ("row", "none") else "c360_summary"


def psql(db: str, *args: str, user: str = "postgres") -> str:
    out = subprocess.run(
        [
            "psql",
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-U",
            user,
            "-v",
            f"app={APP}",
            "-v",
            f"tenant={TENANT}",
            "-d",
            db,
            *args,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout


def url(db: str, user: str = "postgres") -> str:
    return f"postgresql+asyncpg://{user}@127.0.0.1:5432/{db}"


def build_template(customers: int) -> None:
    psql("postgres", "-c", f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    psql("postgres", "-c", f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
    psql(
        "postgres",
        "-c",
        f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP}') THEN "
        f"CREATE ROLE {APP} LOGIN; END IF; END $$",
    )
    psql("postgres", "-c", f"CREATE DATABASE {TEMPLATE}")
    t = time.perf_counter()
    upgrade(url(TEMPLATE))
    grant_application_role(url(TEMPLATE), url(TEMPLATE, APP))
    psql(TEMPLATE, "-v", f"ncust={customers}", "-f", str(HERE / "seed.sql"))
    psql(TEMPLATE, "-c", "VACUUM ANALYZE")
    print(
        f"template {TEMPLATE}: migrated and seeded in {time.perf_counter() - t:.1f} s",
        file=sys.stderr,
    )


def fresh_copy(v: Variant) -> None:
    psql("postgres", "-c", f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    psql("postgres", "-c", f"CREATE DATABASE {DB} TEMPLATE {TEMPLATE} STRATEGY FILE_COPY")
    if v.chain == "off":
        psql(DB, "-c", "ALTER TABLE lifecycle_history DISABLE TRIGGER lifecycle_history_link")
    proto = {
        "deltas": "proto_deltas.sql",
        "link": "proto_link_counts.sql",
        "sealer": "proto_sealer.sql",
    }.get(v.counts)
    if proto:
        psql(DB, "-f", str(HERE / proto))
    psql(DB, "-c", "VACUUM ANALYZE")
    # Warm: the tables and indexes the transaction touches, then a clean WAL start.
    psql(
        DB,
        "-c",
        "SELECT count(*) FROM customers; SELECT count(*) FROM lifecycle_history; "
        "SELECT count(*) FROM outbox; SELECT count(*) FROM bench_cmap; CHECKPOINT",
    )


@dataclass
class Checks:
    checks: int = 0
    mismatched: int = 0  # checks whose summary differed from the GROUP BY
    replay_violations: int = 0  # rows that became visible at or below a seq already seen
    max_unsealed: int = 0
    summary_ms: list[float] = field(default_factory=list)
    sealed: int = 0
    seal_batches: int = 0
    seal_lag_ms: list[float] = field(default_factory=list)
    sealed_in_run: int = 0  # rows sealed while pgbench ran
    drained: int = 0  # rows sealed after it stopped (the backlog)
    drain_s: float = 0.0
    folded: int = 0


CHECK = """
WITH s AS (SELECT stage, n FROM {summary}($1)),
tr AS (SELECT stage, count(*) AS n FROM customers
       WHERE tenant_id = $1 AND deleted_at IS NULL GROUP BY stage),
vis AS (SELECT seq FROM lifecycle_history WHERE tenant_id = $1 AND {visible})
SELECT (SELECT count(*) FROM s FULL JOIN tr USING (stage)
        WHERE COALESCE(s.n, 0) <> COALESCE(tr.n, 0)) AS mismatched,
       (SELECT max(seq) FROM vis) AS max_seq, (SELECT count(*) FROM vis) AS n_vis,
       (SELECT count(*) FROM vis WHERE seq <= $2) AS n_le_prev,
       (SELECT count(*) FROM lifecycle_history WHERE tenant_id = $1 AND chain_pos IS NULL)
         AS unsealed
"""


async def checker(v: Variant, c: Checks, stop: asyncio.Event) -> None:
    conn = await asyncpg.connect(host="127.0.0.1", user="postgres", database=DB)
    await conn.execute(
        "CREATE OR REPLACE FUNCTION c360_summary_today(p text) RETURNS TABLE (stage text, "
        "n bigint) LANGUAGE sql STABLE AS "
        "'SELECT stage, count FROM stage_counts WHERE tenant_id = p'"
    )
    summary = summary_sql(v) or "c360_summary_today"
    visible = "true" if v.chain == "off" else "chain_pos IS NOT NULL"
    query = CHECK.format(summary=summary, visible=visible)
    prev_max, prev_n = 0, None
    try:
        while True:
            r = await conn.fetchrow(query, TENANT, prev_max)
            c.checks += 1
            c.mismatched += r["mismatched"] > 0
            if prev_n is not None and r["n_le_prev"] != prev_n:
                c.replay_violations += r["n_le_prev"] - prev_n
            prev_max, prev_n = r["max_seq"] or 0, r["n_vis"]
            c.max_unsealed = max(c.max_unsealed, r["unsealed"])
            t = time.perf_counter()
            await conn.fetch(f"SELECT * FROM {summary}($1)", TENANT)
            c.summary_ms.append((time.perf_counter() - t) * 1000)
            if stop.is_set():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
    finally:
        await conn.close()


async def sealer(c: Checks, stop: asyncio.Event) -> None:
    """The prototype's sealer: as the application's role, through the SECURITY DEFINER
    function; polls every 5 ms while idle, drains after the run."""
    conn = await asyncpg.connect(host="127.0.0.1", user=APP, database=DB)
    stopped = None
    try:
        while True:
            if stopped is None and stop.is_set():
                stopped, c.sealed_in_run = time.perf_counter(), c.sealed
            r = await conn.fetchrow("SELECT sealed, oldest_ms FROM c360_seal($1, 5000)", TENANT)
            if r["sealed"]:
                c.sealed += r["sealed"]
                c.seal_batches += 1
                c.seal_lag_ms.append(r["oldest_ms"])
            elif stopped is not None:
                c.drained = c.sealed - c.sealed_in_run
                c.drain_s = time.perf_counter() - stopped
                return
            else:
                await asyncio.sleep(0.005)
    finally:
        await conn.close()


async def folder(c: Checks, stop: asyncio.Event) -> None:
    conn = await asyncpg.connect(host="127.0.0.1", user=APP, database=DB)
    try:
        while True:
            done = stop.is_set()
            c.folded += await conn.fetchval("SELECT c360_fold_counts($1)", TENANT)
            if done:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.25)
    finally:
        await conn.close()


def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))]


def parse_pgbench(out: str) -> dict[str, float | str]:
    res: dict[str, float | str] = {}
    if m := re.search(r"tps = ([\d.]+) \(without initial connection time\)", out):
        res["tps"] = float(m.group(1))
    if m := re.search(r"latency average = ([\d.]+) ms", out):
        res["lat_avg"] = float(m.group(1))
    if m := re.search(r"number of transactions actually processed: (\d+)", out):
        res["txns"] = int(m.group(1))
    if m := re.search(r"number of failed transactions: (\d+)", out):
        res["failed"] = int(m.group(1))
    res["aborted"] = "aborted" in out
    stmts = out.split("statement latencies in milliseconds", 1)[-1].splitlines()[1:]
    for line in stmts:
        m = re.match(r"\s+([\d.]+)\s+(\d+)\s+(.*)$", line)
        if not m:
            continue
        ms, sql = float(m.group(1)), m.group(3)
        for key, marker in (
            ("stmt_commit", "COMMIT"),
            ("stmt_record", "WITH t AS"),
            ("stmt_lock", "SELECT array_agg"),
            ("stmt_config", "set_config"),
            ("stmt_notify", "SELECT pg_notify"),
        ):
            if sql.startswith(marker):
                res[key] = ms
    return res


def latencies(log_dir: str) -> list[float]:
    ms: list[float] = []
    for f in Path(log_dir).glob("log*"):
        for line in f.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 6:
                ms.append(int(parts[2]) / 1000)
    return ms


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


async def run_variant(v: Variant, seconds: int, clients: int, customers: int) -> dict[str, object]:
    t0 = time.perf_counter()

    def stage(what: str) -> None:
        print(f"  {v.name}: {what} at {time.perf_counter() - t0:.1f} s", file=sys.stderr)

    fresh_copy(v)
    stage("copied")
    c = Checks()
    stop = asyncio.Event()
    background = [asyncio.create_task(checker(v, c, stop))]
    if v.chain == "sealer":
        background.append(asyncio.create_task(sealer(c, stop)))
    if v.counts == "deltas":
        background.append(asyncio.create_task(folder(c, stop)))
    with tempfile.TemporaryDirectory(prefix="c360-ceiling-") as tmp:
        path = write(Path(tmp, "script.sql"), script(v))
        cmd = [
            "pgbench",
            "-n",
            "-c",
            str(clients),
            "-j",
            "2",
            "-T",
            str(seconds),
            "-M",
            "prepared",
            "-r",
            "-l",
            f"--log-prefix={tmp}/log",
            "-f",
            str(path),
            "-h",
            "127.0.0.1",
            "-U",
            APP,
        ]
        for k, val in {**DEFINES, "ncust": str(customers)}.items():
            cmd += ["-D", f"{k}={val}"]
        if v.rate:
            cmd += ["-R", str(v.rate)]
        cmd.append(DB)
        env = {
            **os.environ,
            "PGOPTIONS": "-c jit=off" + ("" if v.sync else " -c synchronous_commit=off"),
        }
        load = loadavg()
        proc = await asyncio.create_subprocess_exec(
            *cmd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out = (await proc.communicate())[0].decode()
        stage("pgbench done")
        stop.set()
        await asyncio.gather(*background)
        stage("drained")
        lat = latencies(tmp)
    res = parse_pgbench(out)
    if "tps" not in res or proc.returncode:
        print(out, file=sys.stderr)
        raise RuntimeError(f"pgbench failed for {v.name}")
    # After the drain: the same check once more, and the chain walked by `c360 audit verify`.
    final = Checks()
    done = asyncio.Event()
    done.set()
    await checker(v, final, done)
    chain = "n/a (no chain)"
    if v.chain != "off":
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(url(DB))
        try:
            verdict = await verify(engine, TENANT)
        finally:
            await engine.dispose()
        stage("verified")
        chain = f"ok {verdict.rows}" if not verdict.broken else f"BROKEN {verdict.broken[0]}"
    conn = await asyncpg.connect(host="127.0.0.1", user="postgres", database=DB)
    try:
        unchained_events = await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE history_id IS NOT NULL "
            "AND payload->'data'->'chain' IS NULL"
        )
    finally:
        await conn.close()
    per_call = BATCH if v.script == "bulk" else 1
    tps = float(res["tps"])
    return {
        "variant": v.name,
        "what": v.what,
        "load_before": float(load),
        "tps": tps,
        "changes_per_s": tps * per_call,
        "lat_avg_ms": res.get("lat_avg"),
        "lat_p50_ms": pct(lat, 50),
        "lat_p99_ms": pct(lat, 99),
        "commit_ms": res.get("stmt_commit"),
        "record_ms": res.get("stmt_record"),
        "lock_ms": res.get("stmt_lock"),
        "notify_ms": res.get("stmt_notify"),
        "failed": res.get("failed", 0),
        "aborted": res["aborted"],
        "checks": c.checks,
        "summary_exact": (
            "n/a (not kept)"
            if v.counts == "none"
            else f"{c.checks - c.mismatched}/{c.checks} + final "
            + ("ok" if final.mismatched == 0 else "WRONG")
        ),
        "summary_ms_p50": pct(c.summary_ms, 50),
        "replay_violations": c.replay_violations,
        "chain": chain,
        "unchained_events": unchained_events if v.chain != "off" else None,
        "max_unsealed": c.max_unsealed if v.chain == "sealer" else None,
        "sealed": c.sealed,
        "seal_batches": c.seal_batches,
        "seal_lag_p50_ms": pct(c.seal_lag_ms, 50) if c.seal_lag_ms else None,
        "seal_lag_p99_ms": pct(c.seal_lag_ms, 99) if c.seal_lag_ms else None,
        "folded": c.folded,
        "sealed_in_run_per_s": c.sealed_in_run / seconds if v.chain == "sealer" else None,
        "drained": c.drained,
        "drain_rows_per_s": c.drained / c.drain_s if c.drained else None,
        "summary_ms_max": max(c.summary_ms) if c.summary_ms else None,
    }


def fmt(x: object, nd: int = 1) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return str(x)


def table(rows: list[dict[str, object]]) -> str:
    head = (
        "| run | variant | changes/s | tps | lat avg | p50 | p99 | COMMIT | write stmt | "
        "summary exact | summary read p50/max | replay viol. | chain verify | sealer | load |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        seal = ""
        if r["seal_lag_p50_ms"] is not None:
            seal = (
                f"lag p50 {fmt(r['seal_lag_p50_ms'], 0)} / p99 {fmt(r['seal_lag_p99_ms'], 0)} ms; "
                f"{fmt(r['sealed_in_run_per_s'], 0)} rows/s in run; "
                f"max unsealed {r['max_unsealed']:,}"
            )
            if r["drained"]:
                seal += f"; backlog {r['drained']:,} drained at {fmt(r['drain_rows_per_s'], 0)}/s"
        lines.append(
            f"| {r['run']} | {r['variant']}: {r['what']} | {fmt(r['changes_per_s'], 0)} | "
            f"{fmt(r['tps'], 0)} | {fmt(r['lat_avg_ms'])} | {fmt(r['lat_p50_ms'])} | "
            f"{fmt(r['lat_p99_ms'])} | {fmt(r['commit_ms'], 2)} | {fmt(r['record_ms'], 2)} | "
            f"{r['summary_exact']} | {fmt(r['summary_ms_p50'])} / {fmt(r['summary_ms_max'])} ms | "
            f"{r['replay_violations']} | {r['chain']} | {seal} | {fmt(r['load_before'], 2)} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--customers", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=2, help="runs of the key variants")
    ap.add_argument("--only", help="comma-separated variant names")
    ap.add_argument("--reuse-template", action="store_true")
    ap.add_argument("--emit", help="write each variant's pgbench script into this folder")
    ap.add_argument("--json", help="append each result as a JSON line to this file")
    args = ap.parse_args()
    chosen = [v for v in VARIANTS if not args.only or v.name in args.only.split(",")]
    if args.emit:
        Path(args.emit).mkdir(parents=True, exist_ok=True)
        for v in chosen:
            write(Path(args.emit, f"{v.name}.sql"), script(v))
        return
    if not args.reuse_template:
        build_template(args.customers)
    plan = [(v, i + 1) for i in range(args.repeat) for v in chosen if i == 0 or v.key]
    rows: list[dict[str, object]] = []
    with open(LOCK, "a") as lock:
        for v, run in plan:
            print(f"[{v.name} run {run}] waiting for {LOCK}", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                r = asyncio.run(run_variant(v, args.seconds, args.clients, args.customers))
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
            r["run"] = run
            rows.append(r)
            print(
                f"[{v.name} run {run}] {fmt(r['changes_per_s'], 0)} changes/s, p99 "
                f"{fmt(r['lat_p99_ms'])} ms, summary {r['summary_exact']}, replay "
                f"violations {r['replay_violations']}, chain {r['chain']}",
                file=sys.stderr,
            )
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps({**r, "variant_spec": asdict(v)}) + "\n")
    order = {v.name: i for i, v in enumerate(VARIANTS)}
    rows.sort(key=lambda r: (order[str(r["variant"])], r["run"]))
    print(table(rows))


if __name__ == "__main__":
    main()
