"""Settings read from the environment as compose and orchestrators write it."""

from __future__ import annotations

import pytest

from customer360.settings import Settings


def test_an_empty_variable_is_an_unset_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # compose writes `${C360_JWT_ALLOW_HS256:-}` as an empty string when it is not set
    monkeypatch.setenv("C360_JWT_ALLOW_HS256", "")
    monkeypatch.setenv("C360_TLS_CERT_FILE", "")
    monkeypatch.setenv("C360_TLS_PROXY", "")
    s = Settings(_env_file=None)  # type: ignore[call-arg]
    assert s.jwt_allow_hs256 is False and s.tls_cert_file is None and s.tls_proxy == []


def test_proxies_are_addresses_or_ranges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("C360_TLS_PROXY", "10.0.0.0/8, 192.0.2.7 ,::1")
    assert Settings(_env_file=None).tls_proxy == ["10.0.0.0/8", "192.0.2.7", "::1"]  # type: ignore[call-arg]
