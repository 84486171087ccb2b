"""Configuration from the environment (CONTRACT section 7), read once at start."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from customer360.data.crypto import Keyring

# What OTEL_TRACES_EXPORTER may name: what the image ships (OTLP over HTTP) and the SDK's own.
TRACE_EXPORTERS = frozenset({"otlp", "console", "none"})


def _otel(name: str) -> AliasChoices:
    """OpenTelemetry's standard variable, unprefixed (the field's name works in code too)."""
    return AliasChoices(name.upper(), name)


class Settings(BaseSettings):
    # An empty variable is an unset one (compose writes `${VAR:-}` as "").
    model_config = SettingsConfigDict(env_prefix="C360_", extra="ignore", env_ignore_empty=True)

    env: Literal["development", "production"] = "development"
    database_url: str | None = None
    migration_database_url: str | None = None
    redis_url: str | None = None
    kafka_bootstrap: str | None = None
    kafka_create_topics: bool = True

    jwt_secret: SecretStr | None = None
    jwt_issuer: str = "c360-dev"
    jwt_audience: str = "customer360"
    jwt_jwks_url: str | None = None
    jwt_jwks_file: Path | None = None
    # Longest a withdrawn key stays accepted when the JWKS URL sends no Cache-Control
    # max-age (a shorter max-age wins, down to JWKS_MIN_AGE); a file is checked every tick.
    jwt_jwks_refresh_seconds: float = Field(default=300.0, gt=0)
    jwt_allow_hs256: bool = False
    jwt_leeway_seconds: int = 30

    data_key: SecretStr | None = None
    ws_legacy: bool = False
    ws_max_subscriptions: int = Field(default=50, ge=1)
    ws_max_sockets_per_principal: int = Field(default=20, ge=1)
    ws_init_timeout_seconds: float = Field(default=3.0, gt=0)
    allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    graphiql: bool | None = None
    # The Customer360 tab at /app/ (src/webapp.py): on in development, off in production
    # unless enabled.
    web_app: bool | None = None
    introspection: bool | None = None
    suggestions: bool | None = None
    # Queries answered by compiled plans (gql/fastpath.py); "verify" also runs strawberry on
    # each and records any difference (the test suite's mode), "off" leaves all to strawberry.
    graphql_compiled: Literal["on", "off", "verify"] = "on"

    # HTTPS: the service terminates TLS itself, or sits behind these TLS-terminating proxies.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_proxy: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Kafka over TLS and/or SASL (PostgreSQL and Redis take theirs in their URLs).
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_ssl_ca_file: Path | None = None
    kafka_ssl_cert_file: Path | None = None
    kafka_ssl_key_file: Path | None = None
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None

    rate_limit: int = 1000
    # Marks of processed events are kept longer than Kafka keeps a record (7 days by default),
    # so a redelivery is still recognised; then the relay leader's sweep forgets them.
    processed_event_retention_days: int = Field(default=14, ge=1)
    data_dir: Path = Path(".c360")
    # Webhooks (docs/WEBHOOKS.md): seconds between attempts of one delivery (then it fails),
    # each attempt's time limit, what of an answer is read, when a failing endpoint is
    # disabled (that many failures in a row, failing at least that long), how often the
    # worker looks for due deliveries. `webhook_dev_targets` allows http:// and loopback or
    # private addresses in development; production ignores it (events/runtime.py).
    webhooks: bool = True
    webhook_retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0]
    )
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_max_response_bytes: int = Field(default=65536, ge=0)
    webhook_disable_after_failures: int = Field(default=20, ge=1)
    webhook_disable_after_seconds: float = Field(default=5 * 86400.0, ge=0)
    webhook_poll_seconds: float = Field(default=1.0, gt=0)
    webhook_dev_targets: bool = False
    # A fixed pool: connections opened past it are closed again as soon as the pool is full,
    # so a bursty load opened and closed them by the hundred (S2 in docs/BENCHMARKS.md).
    db_pool_size: int = 20
    db_max_overflow: int = 0
    # The hot paths' own pool (data/db.driver_pool): the API's reads and stage changes.
    db_read_pool_size: int = Field(default=10, ge=1)
    # Transactions writing one tenant's queued stage changes at once, per worker
    # (customer360.batching): more overlap round trips, fewer share them.
    write_batches: int = Field(default=2, ge=1)
    log_level: str = "INFO"

    # Tracing (src/tracing.py) is off unless OpenTelemetry's own environment asks for it; the
    # SDK and the exporter read the rest of it (sampler, headers, resource) themselves.
    otel_sdk_disabled: bool = Field(default=False, validation_alias=_otel("otel_sdk_disabled"))
    otel_traces_exporter: str | None = Field(
        default=None, validation_alias=_otel("otel_traces_exporter")
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None, validation_alias=_otel("otel_exporter_otlp_endpoint")
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        default=None, validation_alias=_otel("otel_exporter_otlp_traces_endpoint")
    )
    otel_exporter_otlp_protocol: str | None = Field(
        default=None, validation_alias=_otel("otel_exporter_otlp_protocol")
    )
    otel_exporter_otlp_traces_protocol: str | None = Field(
        default=None, validation_alias=_otel("otel_exporter_otlp_traces_protocol")
    )

    @field_validator(
        "database_url",
        "migration_database_url",
        "redis_url",
        "kafka_bootstrap",
        "jwt_jwks_url",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator(
        "otel_traces_exporter",
        "otel_exporter_otlp_endpoint",
        "otel_exporter_otlp_traces_endpoint",
        "otel_exporter_otlp_protocol",
        "otel_exporter_otlp_traces_protocol",
        mode="before",
    )
    @classmethod
    def _blank_otel_is_unset(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _split_origins(cls, v: object) -> object:
        if isinstance(v, str):
            return [o.strip().rstrip("/") for o in v.split(",") if o.strip()]
        return v

    @field_validator("webhook_retry_schedule", mode="before")
    @classmethod
    def _split_schedule(cls, v: object) -> object:
        if isinstance(v, str):
            v = [float(x) for x in v.split(",") if x.strip()]
        if isinstance(v, list) and any(float(x) < 0 for x in v):
            raise ValueError("C360_WEBHOOK_RETRY_SCHEDULE: seconds must not be negative")
        return v

    @field_validator("tls_proxy", mode="before")
    @classmethod
    def _split_proxies(cls, v: object) -> object:
        if isinstance(v, str):
            v = [p.strip() for p in v.split(",") if p.strip()]
        if isinstance(v, list):
            for proxy in v:
                # an address or a CIDR range; a typo must not silently trust nobody
                ipaddress.ip_network(str(proxy), strict=False)
        return v

    @field_validator("tls_cert_file", "tls_key_file", mode="before")
    @classmethod
    def _blank_path_is_unset(cls, v: object) -> object:
        return None if isinstance(v, str) and not v.strip() else v

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def graphiql_enabled(self) -> bool:
        return self.graphiql if self.graphiql is not None else not self.production

    @property
    def web_app_enabled(self) -> bool:
        return self.web_app if self.web_app is not None else not self.production

    @property
    def introspection_enabled(self) -> bool:
        return self.introspection if self.introspection is not None else not self.production

    @property
    def suggestions_enabled(self) -> bool:
        return self.suggestions if self.suggestions is not None else not self.production

    @property
    def trace_exporters(self) -> list[str]:
        """Where spans go; empty when tracing is off (the default).

        On when OTEL_TRACES_EXPORTER names an exporter other than `none`, or, that unset, when
        an OTLP endpoint is given; OTEL_SDK_DISABLED=true turns it off whatever else is set.
        """
        if self.otel_sdk_disabled:
            return []
        if self.otel_traces_exporter is None:
            endpoint = self.otel_exporter_otlp_traces_endpoint or self.otel_exporter_otlp_endpoint
            return ["otlp"] if endpoint else []
        named = [e.strip().lower() for e in self.otel_traces_exporter.split(",") if e.strip()]
        return [e for e in dict.fromkeys(named) if e != "none"]

    @property
    def tracing_enabled(self) -> bool:
        return bool(self.trace_exporters)

    def tracing_problems(self) -> list[str]:
        """Why the tracing settings cannot work: said at start, not by spans silently lost."""
        if not self.tracing_enabled:
            return []
        problems = [
            f"OTEL_TRACES_EXPORTER {e!r} is not available (otlp, console or none)"
            for e in self.trace_exporters
            if e not in TRACE_EXPORTERS
        ]
        protocol = self.otel_exporter_otlp_traces_protocol or self.otel_exporter_otlp_protocol
        if "otlp" in self.trace_exporters and protocol not in (None, "http/protobuf"):
            problems.append(
                f"OTEL_EXPORTER_OTLP_PROTOCOL {protocol!r} is not available (http/protobuf)"
            )
        return problems

    @property
    def hs256_secret(self) -> str | None:
        """The HMAC secret, when HS256 is acceptable under the contract's rules."""
        if self.jwt_secret is None:
            return None
        if self.jwt_jwks_url or self.jwt_jwks_file:
            return None
        if self.production and not self.jwt_allow_hs256:
            return None
        return self.jwt_secret.get_secret_value()

    def keyring(self) -> Keyring:
        """The master keys of C360_DATA_KEY; in development, a generated one kept in data_dir."""
        from customer360.data.crypto import KeyringError, dev_keyring

        spec = self._data_key()
        if spec is None and self.production:
            # Never a throwaway key in production: data sealed with it would be lost.
            raise KeyringError("C360_DATA_KEY is unset (required in production)")
        return dev_keyring(spec, self.data_dir)

    def _data_key(self) -> str | None:
        # model_copy(update=...) skips validation, so a plain str may stand here
        key: object = self.data_key
        return key.get_secret_value() if isinstance(key, SecretStr) else (key or None)  # type: ignore[return-value]

    def production_problems(self) -> list[str]:
        """Why a production start must refuse, if it must."""
        if not self.production:
            return []
        problems = []
        if not self.database_url:
            problems.append("C360_DATABASE_URL is unset (no embedded PostgreSQL in production)")
        if not self.redis_url:
            problems.append("C360_REDIS_URL is unset (no embedded Redis in production)")
        spec = self._data_key()
        if spec is None:
            problems.append("C360_DATA_KEY is unset")
        else:
            from customer360.data.crypto import Keyring, KeyringError

            try:
                Keyring.parse(spec)
            except KeyringError as exc:
                problems.append(str(exc))
        has_keys = bool(self.jwt_jwks_url or self.jwt_jwks_file)
        if not has_keys and not (self.jwt_secret and self.jwt_allow_hs256):
            problems.append(
                "no token check: set C360_JWT_JWKS_URL or C360_JWT_JWKS_FILE, or "
                "C360_JWT_SECRET with C360_JWT_ALLOW_HS256=1"
            )
        if self.kafka_bootstrap is None:
            problems.append("C360_KAFKA_BOOTSTRAP is unset (set it, or 'off')")
        problems.extend(self.tls_problems())
        problems.extend(self.tracing_problems())
        if not self.tls_terminated and not self.tls_proxy:
            problems.append(
                "it would serve plain HTTP: set C360_TLS_CERT_FILE and C360_TLS_KEY_FILE, or "
                "C360_TLS_PROXY to the TLS-terminating proxies in front of it"
            )
        return problems

    @property
    def tls_terminated(self) -> bool:
        """The service itself serves HTTPS and WSS."""
        return self.tls_cert_file is not None and self.tls_key_file is not None

    def tls_problems(self) -> list[str]:
        """Why the TLS settings cannot work, in any environment."""
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            return ["C360_TLS_CERT_FILE and C360_TLS_KEY_FILE go together"]
        return [
            f"{name} {path} cannot be read"
            for name, path in (
                ("C360_TLS_CERT_FILE", self.tls_cert_file),
                ("C360_TLS_KEY_FILE", self.tls_key_file),
                ("C360_KAFKA_SSL_CA_FILE", self.kafka_ssl_ca_file),
                ("C360_KAFKA_SSL_CERT_FILE", self.kafka_ssl_cert_file),
                ("C360_KAFKA_SSL_KEY_FILE", self.kafka_ssl_key_file),
            )
            if path is not None and not path.is_file()
        ]
