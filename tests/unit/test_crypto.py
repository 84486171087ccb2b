"""Field encryption and the keyring, as pure functions (no database needed)."""

from __future__ import annotations

import base64
import uuid

import pytest

from customer360.data.crypto import PREFIX, Keyring, KeyringError, TenantCipher


def key(byte: bytes) -> str:
    return base64.b64encode(byte * 32).decode()


def test_keyring_parses_ids_and_the_first_key_wraps() -> None:
    ring = Keyring.parse(f" new:{key(b'n')} , old:{key(b'o')}")
    assert ring.primary == "new" and set(ring.keys) == {"new", "old"}
    assert "n" * 5 not in repr(ring)  # the key bytes never show in logs


@pytest.mark.parametrize(
    "spec",
    ["", "nokid", f":{key(b'x')}", "k1:not-base64!", f"k1:{base64.b64encode(b'short').decode()}"],
)
def test_a_bad_keyring_is_refused_with_a_reason(spec: str) -> None:
    with pytest.raises(KeyringError, match="C360_DATA_KEY"):
        Keyring.parse(spec)


def test_data_keys_unwrap_after_rotation_only_while_the_old_key_is_listed() -> None:
    old = Keyring.parse(f"old:{key(b'o')}")
    kid, wrapped = old.wrap("t1", b"d" * 32)
    rotated = Keyring.parse(f"new:{key(b'n')},old:{key(b'o')}")
    assert rotated.unwrap("t1", kid, wrapped) == b"d" * 32
    kid2, wrapped2 = rotated.wrap("t1", b"d" * 32)
    assert kid2 == "new"
    assert Keyring.parse(f"new:{key(b'n')}").unwrap("t1", kid2, wrapped2) == b"d" * 32
    with pytest.raises(KeyringError, match="not in C360_DATA_KEY"):
        Keyring.parse(f"new:{key(b'n')}").unwrap("t1", kid, wrapped)
    # a wrapped key moved to another tenant does not open
    with pytest.raises(KeyringError, match="does not open"):
        old.unwrap("t2", kid, wrapped)


def test_sealed_values_open_only_in_their_own_row_and_column() -> None:
    cipher = TenantCipher("t1", b"k" * 32)
    a, b = uuid.uuid4(), uuid.uuid4()
    token = cipher.seal("ann@example.com", a, "email")
    assert token is not None and token.startswith(PREFIX) and "ann" not in token
    assert cipher.seal("ann@example.com", a, "email") != token  # fresh nonce every time
    assert cipher.open(token, a, "email") == "ann@example.com"
    assert cipher.open(token, b, "email") is None  # copied to another customer
    assert cipher.open(token, a, "phone") is None  # copied to another column
    assert TenantCipher("t2", b"k" * 32).open(token, a, "email") is None  # another tenant
    assert TenantCipher("t1", b"x" * 32).open(token, a, "email") is None  # key destroyed
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert cipher.open(tampered, a, "email") is None
    assert cipher.seal(None, a, "email") is None and cipher.open(None, a, "email") is None


def test_the_blind_index_matches_exact_emails_case_insensitively_per_tenant() -> None:
    cipher = TenantCipher("t1", b"k" * 32)
    assert cipher.blind(" Ann@Example.com ") == cipher.blind("ann@example.com")
    assert cipher.blind("ann@example.com") != cipher.blind("ann@example.org")
    assert TenantCipher("t1", b"j" * 32).blind("ann@example.com") != cipher.blind("ann@example.com")
