"""Users and sessions as the domain sees them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from vaultpay_common.context import Role

__all__ = ["Session", "User"]


@dataclass(slots=True)
class User:
    id: str
    email: str
    full_name: str
    password_hash: str
    role: Role
    active: bool
    deactivation_reason: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Session:
    """A sign-in: one refresh-token family. Access tokens name it in their `sid` claim."""

    id: str
    user_id: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None

    def is_live(self, now: datetime) -> bool:
        return self.revoked_at is None and now < self.expires_at
