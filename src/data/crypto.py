"""Encryption at rest: AES-256-GCM field tokens under per-tenant data keys.

Each tenant has one 256-bit data key, stored only wrapped (AES-256-GCM) by a master key of
`C360_DATA_KEY`, a keyring of `kid:base64` entries: the first wraps, all unwrap, so master
keys rotate by re-wrapping (`c360 keys rotate`) without touching any encrypted column.
Destroying a tenant's wrapped key makes all its encrypted values unreadable (crypto-erase).

A field token is text: `v1.` + base64url(nonce || ciphertext || tag). The associated data
binds it to its tenant, customer and column, so a token copied to another row fails to open.
Exact-match lookup by email goes through a keyed blind index: HMAC-SHA256 of the normalised
address under a key derived from the tenant's data key (equal inputs, equal digests; the
digest reveals nothing without the key).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PREFIX = "v1."
_NONCE = 12


class KeyringError(ValueError):
    """A keyring entry or wrapped key that cannot be used (the message names which)."""


def _aead(key: bytes, plain: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(_NONCE)
    return nonce + AESGCM(key).encrypt(nonce, plain, aad)


def _unaead(key: bytes, blob: bytes, aad: bytes) -> bytes:
    return AESGCM(key).decrypt(blob[:_NONCE], blob[_NONCE:], aad)


@dataclass(frozen=True)
class Keyring:
    """Master keys by id; `primary` (the first listed) wraps new and rotated data keys."""

    primary: str
    keys: dict[str, bytes] = field(repr=False)

    @classmethod
    def parse(cls, spec: str) -> Keyring:
        keys: dict[str, bytes] = {}
        order: list[str] = []
        for entry in (e.strip() for e in spec.split(",")):
            if not entry:
                continue
            kid, sep, b64 = entry.partition(":")
            if not sep or not kid.strip():
                raise KeyringError("C360_DATA_KEY entries are kid:base64-of-32-bytes")
            try:
                raw = base64.b64decode(b64.strip(), validate=True)
            except binascii.Error:
                raw = b""
            if len(raw) != 32:
                raise KeyringError(f"C360_DATA_KEY key {kid.strip()!r} is not 32 bytes of base64")
            keys[kid.strip()] = raw
            order.append(kid.strip())
        if not order:
            raise KeyringError("C360_DATA_KEY holds no key")
        return cls(order[0], keys)

    @staticmethod
    def generate(kid: str = "k1") -> str:
        return f"{kid}:{base64.b64encode(secrets.token_bytes(32)).decode()}"

    def wrap(self, tenant_id: str, data_key: bytes) -> tuple[str, bytes]:
        aad = f"c360-dek/{tenant_id}/{self.primary}".encode()
        return self.primary, _aead(self.keys[self.primary], data_key, aad)

    def unwrap(self, tenant_id: str, kid: str, wrapped: bytes) -> bytes:
        key = self.keys.get(kid)
        if key is None:
            raise KeyringError(
                f"tenant {tenant_id}'s data key is wrapped by {kid!r}, not in C360_DATA_KEY"
            )
        try:
            return _unaead(key, wrapped, f"c360-dek/{tenant_id}/{kid}".encode())
        except InvalidTag as exc:
            raise KeyringError(f"tenant {tenant_id}'s data key does not open with {kid!r}") from exc


def dev_keyring(spec: str | None, data_dir: Path) -> Keyring:
    """C360_DATA_KEY, or (development only) a keyring generated once beside the embedded data."""
    if spec:
        return Keyring.parse(spec)
    path = data_dir / "dev-data-key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Keyring.generate("dev1"))
        path.chmod(0o600)
    return Keyring.parse(path.read_text())


class TenantCipher:
    def __init__(self, tenant_id: str, data_key: bytes) -> None:
        self.tenant_id = tenant_id
        self._key = data_key
        self._index = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"c360 email blind index"
        ).derive(data_key)

    def _aad(self, customer_id: uuid.UUID, column: str) -> bytes:
        return f"{self.tenant_id}/{customer_id}/{column}".encode()

    def seal(self, value: str | None, customer_id: uuid.UUID, column: str) -> str | None:
        if value is None:
            return None
        blob = _aead(self._key, value.encode(), self._aad(customer_id, column))
        return PREFIX + base64.urlsafe_b64encode(blob).decode()

    def open(self, token: str | None, customer_id: uuid.UUID, column: str) -> str | None:
        """The plain value; None when absent or unreadable (erased, altered, misplaced)."""
        if not token or not token.startswith(PREFIX):
            return None
        try:
            blob = base64.urlsafe_b64decode(token[len(PREFIX) :])
            return _unaead(self._key, blob, self._aad(customer_id, column)).decode()
        except (InvalidTag, ValueError):
            return None

    def blind(self, email: str | None) -> bytes | None:
        if email is None:
            return None
        return hmac.new(self._index, email.strip().lower().encode(), hashlib.sha256).digest()
