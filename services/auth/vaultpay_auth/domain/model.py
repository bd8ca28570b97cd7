"""Users and sessions as the domain sees them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from vaultpay_common.context import Role

__all__ = ["Session", "SessionHolder", "User"]


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
    # Who deactivated the user (a staff account's id); None while active, or not on record.
    deactivated_by: str | None = None


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


@dataclass(frozen=True, slots=True)
class SessionHolder:
    """A session with what the strict path needs to know about its user, read at once."""

    session: Session
    user_role: Role
    user_active: bool
