"""HTTPS (CONTRACT section 7): the service terminates TLS itself, or trusts the forwarded
headers of its TLS-terminating proxies only; HSTS on every answer given over TLS; TLS and
SASL towards Kafka. (PostgreSQL and Redis take theirs in their URLs: `?ssl=verify-full`
with PGSSLROOTCERT, and `rediss://...?ssl_ca_certs=...`.)"""

from __future__ import annotations

import ssl
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from customer360.gql.limits import MAX_REQUEST_BYTES
from customer360.settings import Settings
from customer360.workers import GRACEFUL_SECONDS

# A year, subdomains included: a browser that saw it never tries plain HTTP again.
HSTS = "max-age=31536000; includeSubDomains"
# An idle keep-alive connection is closed by whichever side times out first; when that is
# the server, a request the client sends on it at that moment is reset (a 502 behind a
# proxy, a ReadError in httpx). So the gateway outwaits what sits in front of it: ingress
# NGINX and cloud load balancers keep upstream connections 60 s, browsers and httpx less.
KEEP_ALIVE_SECONDS = 75


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for serving as configured: HTTPS, trusted proxies, message size."""
    # The contract's 1 MiB holds for WebSocket messages too: uvicorn closes a socket that
    # sends a bigger one with 1009 (its default is 16 MiB).
    options: dict[str, Any] = {
        "ws_max_size": MAX_REQUEST_BYTES,
        "ws_per_message_deflate": False,
        # A stop waits this long for open connections, then closes them: never for ever.
        "timeout_graceful_shutdown": GRACEFUL_SECONDS,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
    }
    if settings.tls_terminated:
        options["ssl_certfile"] = str(settings.tls_cert_file)
        options["ssl_keyfile"] = str(settings.tls_key_file)
    # X-Forwarded-Proto and X-Forwarded-For from the listed proxies only; from anybody else
    # they are ignored (uvicorn trusts 127.0.0.1 by default: not here).
    options["proxy_headers"] = bool(settings.tls_proxy)
    options["forwarded_allow_ips"] = list(settings.tls_proxy)
    return options


class StrictTransportSecurity:
    """Strict-Transport-Security on answers given over TLS, ours or a trusted proxy's."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("scheme") != "https":
            await self.app(scope, receive, send)
            return

        async def with_hsts(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["Strict-Transport-Security"] = HSTS
            await send(message)

        await self.app(scope, receive, with_hsts)


def kafka_options(settings: Settings) -> dict[str, Any]:
    """aiokafka's security options (producer, consumer and admin alike)."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(
            cafile=str(settings.kafka_ssl_ca_file) if settings.kafka_ssl_ca_file else None
        )
        if settings.kafka_ssl_cert_file is not None:
            context.load_cert_chain(
                str(settings.kafka_ssl_cert_file),
                str(settings.kafka_ssl_key_file) if settings.kafka_ssl_key_file else None,
            )
        options["ssl_context"] = context
    if protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = password.get_secret_value() if password else None
    return options
