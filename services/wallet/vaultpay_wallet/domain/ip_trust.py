"""IP trust: which client addresses a user confirmed for money movement. Pure Python.

Addresses are never stored: only `HMAC-SHA256(key, canonical address)`, with the key kept
outside the database. A bare SHA-256 would not do: there are only 2^32 IPv4 addresses, so
a dump of bare hashes is reversed by enumeration in minutes. Users see the first 16 hex
digits of the HMAC (`public_hash`): enough to tell addresses apart and revoke one, useless
for recovering the address.

    hasher = IpHasher(key)
    hasher.hash("::ffff:203.0.113.7") == hasher.hash(" 203.0.113.7")   # same address
    hasher.hash("2001:db8:1:2::a") == hasher.hash("2001:db8:1:2::b")   # same /64

What is trusted is an IPv4 address, or an IPv6 address's /64: one subscriber's network, from
which a device takes a new temporary address every day or reconnection (the default on every
phone and desktop system); trusting the /128 asked the user to confirm again after each
rotation (review of 2026-12-05). Auth's and the gateway's per-address limits count the same
/64 (`address_block`).

Confirmation tokens are 256-bit random strings mailed to the owner; only their SHA-256 is
stored (guessing the token is as hard as guessing the hash preimage, so no slow hash).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from vaultpay_common.errors import FailedPreconditionError, NotFoundError, ValidationError

__all__ = [
    "CONFIRMATION_TOKEN_TTL",
    "IP_HASH_PREFIX_LENGTH",
    "TRUST_TTL",
    "IpConfirmation",
    "IpConfirmationTokenInvalidError",
    "IpHasher",
    "TrustedIp",
    "TrustedIpCursor",
    "TrustedIpNotFoundError",
    "canonical_ip",
    "canonical_ip_hash",
    "check_confirmation_token",
    "check_public_ip_hash",
    "hash_confirmation_token",
    "new_confirmation_token",
    "trusted_block",
]

CONFIRMATION_TOKEN_TTL = timedelta(minutes=30)
TRUST_TTL = timedelta(days=30)
IP_HASH_PREFIX_LENGTH = 16
_TOKEN_PREFIX = "vpip_"  # noqa: S105 (a prefix, not a secret)
_TOKEN_MAX_LENGTH = 128
_PUBLIC_HASH = re.compile(r"^[0-9a-f]{16}\Z")
_MAX_IP_TEXT = 64  # the longest IPv6 text with a scope id is well below this


class TrustedIpNotFoundError(NotFoundError):
    """No such trusted address for this user (another user's hash answers the same)."""

    reason = "TRUSTED_IP_NOT_FOUND"
    default_message = "no such trusted IP address"


class IpConfirmationTokenInvalidError(FailedPreconditionError):
    """Unknown, expired, superseded or already used: one reason for all, so the answer
    does not help anyone probing tokens (same rule as the PIN reset token)."""

    reason = "IP_CONFIRMATION_TOKEN_INVALID"
    default_message = "the IP confirmation token is invalid, expired or already used"


def canonical_ip(text: str, field: str = "client_ip") -> str:
    """The one text form of an address: IPv4 dotted quad or compressed lower-case IPv6.

    IPv4-mapped IPv6 (`::ffff:a.b.c.d`, what a dual-stack socket reports) becomes the IPv4
    address, and an IPv6 zone (`%eth0`) is dropped, so one client has one hash.
    """
    value = text.strip()
    if not value:
        raise ValidationError.single(field, "is required")
    if len(value) > _MAX_IP_TEXT:
        raise ValidationError.single(field, "is not an IPv4 or IPv6 address")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ValidationError.single(field, "is not an IPv4 or IPv6 address") from None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(address).split("%", 1)[0]
    return str(address)


class IpHasher:
    """Keyed hashing of client addresses; the key never reaches the database."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the IP hashing key must be at least 32 bytes")
        self._key = key

    def hash(self, client_ip: str, field: str = "client_ip") -> str:
        """Hex HMAC-SHA256 of what is trusted for the address (`trusted_block`);
        INVALID_ARGUMENT for a bad address."""
        trusted = trusted_block(canonical_ip(client_ip, field))
        return hmac.new(self._key, trusted.encode(), hashlib.sha256).hexdigest()


def trusted_block(canonical: str) -> str:
    """An IPv4 address as it is; an IPv6 address as its /64 ("2001:db8:1:2::/64")."""
    address = ipaddress.ip_address(canonical)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return canonical


def canonical_ip_hash(value: str) -> str:
    """The one spelling of a public ip_hash (lower case, no surrounding spaces), valid or not:
    what check_public_ip_hash checks, and what an idempotency fingerprint compares."""
    return value.strip().lower()


def check_public_ip_hash(value: str, field: str = "ip_hash") -> str:
    """A TrustedIp.ip_hash as users send it back: 16 hex digits (any case)."""
    candidate = canonical_ip_hash(value)
    if not _PUBLIC_HASH.match(candidate):
        raise ValidationError.single(field, "must be the 16 hex digits shown by ListTrustedIps")
    return candidate


def new_confirmation_token() -> str:
    return _TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_confirmation_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_confirmation_token(value: str, field: str = "token") -> str:
    """Shape check only (required, bounded, our prefix); validity is the database's."""
    token = value.strip()
    if not token:
        raise ValidationError.single(field, "is required")
    if len(token) > _TOKEN_MAX_LENGTH or not token.startswith(_TOKEN_PREFIX):
        raise ValidationError.single(field, "is not an IP confirmation token")
    return token


@dataclass(frozen=True, slots=True)
class TrustedIp:
    """One confirmed address of one user. `ip_hash` is the full HMAC (64 hex digits)."""

    user_id: str
    ip_hash: str
    first_seen_at: datetime
    last_seen_at: datetime
    expires_at: datetime

    @property
    def public_hash(self) -> str:
        return self.ip_hash[:IP_HASH_PREFIX_LENGTH]

    def is_trusted_at(self, now: datetime) -> bool:
        return now < self.expires_at

    @classmethod
    def confirm(
        cls,
        existing: TrustedIp | None,
        *,
        user_id: str,
        ip_hash: str,
        now: datetime,
        ttl: timedelta = TRUST_TTL,
    ) -> TrustedIp:
        """Trust for `ttl` from now; re-confirming renews and keeps the first-seen time."""
        if existing is None:
            return cls(user_id, ip_hash, now, now, now + ttl)
        return replace(existing, last_seen_at=now, expires_at=now + ttl)


@dataclass(frozen=True, slots=True)
class TrustedIpCursor:
    """Keyset position of ListTrustedIps (most recently confirmed first).

    On the first-seen time, which never changes (re-confirming keeps it): the last-seen time
    moves with every movement from the address, so an address used between two page fetches
    jumped ahead of the cursor and was never listed (the one a user revoking an attacker's
    network looks for). Holds the public 16-digit hash, never the full HMAC; comparing the
    full hashes with the prefix orders them exactly as the full hashes would (prefixes of one
    user differ).
    """

    first_seen_at: datetime
    public_hash: str

    @classmethod
    def after(cls, trusted: TrustedIp) -> TrustedIpCursor:
        return cls(trusted.first_seen_at, trusted.public_hash)

    def position(self) -> dict[str, str]:
        return {"f": self.first_seen_at.isoformat(), "h": self.public_hash}

    @classmethod
    def from_position(cls, position: Mapping[str, Any]) -> TrustedIpCursor:
        try:
            first_seen_at = datetime.fromisoformat(str(position["f"]))
            public_hash = check_public_ip_hash(str(position["h"]), "page_token")
        except (KeyError, ValueError) as exc:
            raise ValidationError.single("page_token", "is not a valid page token") from exc
        if first_seen_at.tzinfo is None:
            raise ValidationError.single("page_token", "is not a valid page token")
        return cls(first_seen_at, public_hash)


@dataclass(frozen=True, slots=True)
class IpConfirmation:
    """The pending confirmation of one (user, address): at most one per pair, so its
    `sent_at` is also the start of the one-mail-per-window rule."""

    user_id: str
    ip_hash: str
    token_hash: str
    request_id: str  # of the money movement whose check mailed it: retries send nothing
    sent_at: datetime
    expires_at: datetime
    used_at: datetime | None = None

    def check_usable(self, now: datetime) -> None:
        if self.used_at is not None or now >= self.expires_at:
            raise IpConfirmationTokenInvalidError()
