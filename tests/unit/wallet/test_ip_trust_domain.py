"""IP-trust domain rules: canonical addresses, keyed hashes, tokens, cursors; and the purity
of the IP-trust and notification modules (no infrastructure imports)."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from vaultpay_common.errors import ValidationError
from vaultpay_wallet.domain.ip_trust import (
    IpConfirmation,
    IpConfirmationTokenInvalidError,
    IpHasher,
    TrustedIp,
    TrustedIpCursor,
    canonical_ip,
    check_confirmation_token,
    check_public_ip_hash,
    hash_confirmation_token,
    new_confirmation_token,
)

KEY = b"k" * 32
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
WALLET = Path(__file__).resolve().parents[3] / "services" / "wallet" / "vaultpay_wallet"


@pytest.mark.parametrize(
    ("raw", "canonical"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("  203.0.113.7\n", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("::FFFF:CB00:7107", "203.0.113.7"),
        ("2001:DB8:0:0:0:0:0:1", "2001:db8::1"),
        ("fe80::1%eth0", "fe80::1"),
    ],
)
def test_canonical_ip_gives_one_text_per_address(raw: str, canonical: str) -> None:
    assert canonical_ip(raw) == canonical


@pytest.mark.parametrize(
    "raw", ["", "   ", "not-an-ip", "203.0.113.7:443", "01.2.3.4", "1.2.3.4/32", "[::1]", "x" * 100]
)
def test_canonical_ip_refuses_what_is_not_an_address_naming_the_field(raw: str) -> None:
    with pytest.raises(ValidationError) as caught:
        canonical_ip(raw)
    assert caught.value.violations[0].field == "client_ip"


def test_mapped_and_plain_ipv4_hash_alike_and_the_key_matters() -> None:
    hasher = IpHasher(KEY)
    assert hasher.hash("::ffff:198.51.100.2") == hasher.hash("198.51.100.2")
    assert hasher.hash("198.51.100.2") != IpHasher(b"j" * 32).hash("198.51.100.2")
    assert len(hasher.hash("198.51.100.2")) == 64


def test_an_ipv6_address_is_trusted_as_its_64() -> None:
    """Review of 2026-12-05: trusting the /128 asked for a new confirmation after every
    rotation of a device's temporary address (daily, or at each reconnection)."""
    hasher = IpHasher(KEY)
    assert hasher.hash("2001:db8:1:2::a") == hasher.hash("2001:db8:1:2:ffff:1:2:3")
    assert hasher.hash("2001:db8:1:2::a") != hasher.hash("2001:db8:1:3::a")
    assert hasher.hash("fe80::1%eth0") == hasher.hash("fe80::2")
    assert hasher.hash("::ffff:198.51.100.2") != hasher.hash("::ffff:198.51.100.3")  # IPv4


def test_the_hash_is_not_a_bare_sha256_of_the_address() -> None:
    import hashlib

    bare = hashlib.sha256(b"198.51.100.2").hexdigest()
    assert IpHasher(KEY).hash("198.51.100.2") != bare


def test_a_short_ip_hashing_key_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        IpHasher(b"short")


def test_public_hash_is_16_lower_hex_digits() -> None:
    assert check_public_ip_hash(" ABCDEF0123456789 ") == "abcdef0123456789"
    for bad in ("", "abc", "g" * 16, "a" * 17):
        with pytest.raises(ValidationError) as caught:
            check_public_ip_hash(bad)
        assert caught.value.violations[0].field == "ip_hash"


def test_confirmation_tokens_are_random_prefixed_and_stored_hashed() -> None:
    first, second = new_confirmation_token(), new_confirmation_token()
    assert first != second
    assert check_confirmation_token(first) == first
    assert hash_confirmation_token(first) != first
    assert len(hash_confirmation_token(first)) == 64
    for bad in ("", "plain-token", "vpip_" + "x" * 200):
        with pytest.raises(ValidationError) as caught:
            check_confirmation_token(bad)
        assert caught.value.violations[0].field == "token"


def test_reconfirming_renews_the_trust_and_keeps_first_seen() -> None:
    first = TrustedIp.confirm(None, user_id="u", ip_hash="a" * 64, now=NOW)
    assert first.expires_at == NOW + timedelta(days=30)
    later = NOW + timedelta(days=29)
    renewed = TrustedIp.confirm(first, user_id="u", ip_hash="a" * 64, now=later)
    assert renewed.first_seen_at == NOW
    assert renewed.expires_at == later + timedelta(days=30)
    assert first.is_trusted_at(NOW + timedelta(days=29, hours=23))
    assert not first.is_trusted_at(NOW + timedelta(days=30))
    assert first.public_hash == "a" * 16


def test_a_confirmation_is_usable_once_and_for_30_minutes() -> None:
    pending = IpConfirmation("u", "a" * 64, "h", "r", NOW, NOW + timedelta(minutes=30))
    pending.check_usable(NOW + timedelta(minutes=29))
    with pytest.raises(IpConfirmationTokenInvalidError):
        pending.check_usable(NOW + timedelta(minutes=30))
    used = IpConfirmation("u", "a" * 64, "h", "r", NOW, NOW + timedelta(minutes=30), NOW)
    with pytest.raises(IpConfirmationTokenInvalidError):
        used.check_usable(NOW)


def test_trusted_ip_cursor_round_trips_and_refuses_garbage() -> None:
    cursor = TrustedIpCursor(NOW, "0123456789abcdef")
    assert TrustedIpCursor.from_position(cursor.position()) == cursor
    for bad in ({}, {"f": "yesterday", "h": "0123456789abcdef"}, {"f": NOW.isoformat()}):
        with pytest.raises(ValidationError) as caught:
            TrustedIpCursor.from_position(bad)
        assert caught.value.violations[0].field == "page_token"


_MINE = [
    "domain/ip_trust.py",
    "domain/notifications.py",
    "service_layer/ip_trust.py",
    "service_layer/notifications.py",
]
_FORBIDDEN = ("grpc", "sqlalchemy", "redis", "asyncpg", "vaultpay.")


@pytest.mark.parametrize("module", _MINE)
def test_domain_and_use_cases_import_no_infrastructure(module: str) -> None:
    tree = ast.parse((WALLET / module).read_text())
    imported: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.append(node.module)
    bad = [
        name
        for name in imported
        if name.startswith(_FORBIDDEN) or name.endswith("_pb2") or ".adapters" in name
    ]
    assert bad == []
