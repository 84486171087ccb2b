"""Webhook signing (Standard Webhooks) and where a webhook may be sent (SSRF).

Signing: `webhook-signature` is `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")),
the key being the base64 part of the endpoint's `whsec_` secret; several signatures are
separated by spaces (during a rotation, the new secret's and the previous one's).

Targets: `https://` only, to public addresses only, checked when an endpoint is registered
(URL and IP literals) and again at every delivery on the addresses its name resolves to, so
a name that later points at 127.0.0.1 or 10.x (DNS rebinding) is refused as well. The
development setting `C360_WEBHOOK_DEV_TARGETS` allows http:// and any address.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

SECRET_PREFIX = "whsec_"  # noqa: S105 (a prefix, not a secret)
MAX_URL = 2048


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signatures(secrets_: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    return " ".join(signature(s, msg_id, timestamp, body) for s in secrets_)


class TargetRefused(ValueError):
    """A URL or address webhooks may not be sent to (the message says why)."""


def address_refusal(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why this address is no webhook target (loopback, private, link-local...), or None."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for name in ("loopback", "link_local", "private", "multicast", "reserved", "unspecified"):
        if getattr(ip, f"is_{name}"):
            return f"{ip} is a {name.replace('_', '-')} address"
    if not ip.is_global:
        return f"{ip} is not a public address"
    return None


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    """`dev_targets`: development only, http:// and any address allowed."""

    dev_targets: bool = False

    def check_url(self, url: str) -> None:
        """Raises TargetRefused for a URL that may never be a target."""
        if len(url) > MAX_URL:
            raise TargetRefused(f"the URL is longer than {MAX_URL} characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise TargetRefused(f"not a URL: {exc}") from None
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise TargetRefused("the URL must be https://host/...")
        if parts.scheme == "http" and not self.dev_targets:
            raise TargetRefused("only https:// URLs are allowed")
        if parts.username is not None or parts.password is not None:
            raise TargetRefused("the URL must not carry credentials")
        if parts.fragment:
            raise TargetRefused("the URL must not have a fragment")
        if port == 0:
            raise TargetRefused("port 0 is no port")
        host = parts.hostname
        try:
            literal = ipaddress.ip_address(host)
        except ValueError:
            if not self.dev_targets and (host == "localhost" or host.endswith(".localhost")):
                raise TargetRefused("localhost is a loopback address") from None
            return
        self.check_address(literal)

    def check_address(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
        if self.dev_targets:
            return
        why = address_refusal(ip)
        if why is not None:
            raise TargetRefused(why)
