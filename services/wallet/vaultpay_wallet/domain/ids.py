"""Wallet ids: `VPY-` and 6 characters from [A-Z0-9], drawn from a CSPRNG.

36^6 ≈ 2.2 billion ids; collisions are rare but possible, so the unique primary key decides
and the use case draws again (see `WalletService.create_wallet`).

    >>> is_wallet_id("VPY-7K3M9Q")
    True
"""

from __future__ import annotations

import re
import secrets
import string

from vaultpay_common.text import ascii_upper

__all__ = ["WALLET_ID_ALPHABET", "is_wallet_id", "new_wallet_id", "normalize_wallet_id"]

WALLET_ID_ALPHABET = string.ascii_uppercase + string.digits
_PREFIX = "VPY-"
_LENGTH = 6
_PATTERN = re.compile(r"^VPY-[A-Z0-9]{6}\Z")


def new_wallet_id() -> str:
    return _PREFIX + "".join(secrets.choice(WALLET_ID_ALPHABET) for _ in range(_LENGTH))


def normalize_wallet_id(raw: str) -> str:
    """Ids are case-insensitive on input (LookupWallet) and upper case everywhere else."""
    return ascii_upper(raw)


def is_wallet_id(value: str) -> bool:
    return bool(_PATTERN.match(value))
