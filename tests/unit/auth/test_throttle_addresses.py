"""The per-address throttles count an IPv6 client by its /64 (review of 2026-12-04, third:
counting whole addresses let one connection, given a /64, spray passwords or sign up from a
new address per request)."""

from __future__ import annotations

import pytest

from vaultpay_auth.adapters.throttle import address_block


@pytest.mark.parametrize(
    ("client_ip", "counted_as"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("", "unknown"),
    ],
)
def test_an_address_counts_as_its_ipv4_address_or_its_ipv6_64(
    client_ip: str, counted_as: str
) -> None:
    assert address_block(client_ip) == counted_as
