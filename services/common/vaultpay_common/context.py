"""Per-call context carried in contextvars: request id, caller, client IP and deadline.

grpc.aio runs each RPC in its own task, so values set by the interceptors are visible to the
handler and everything it awaits, and to the log formatter, without being passed around.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass
from enum import IntEnum

__all__ = [
    "CLIENT_IP",
    "DEADLINE",
    "METHOD",
    "PRINCIPAL",
    "REQUEST_ID",
    "Principal",
    "Role",
    "remaining_seconds",
]


class Role(IntEnum):
    """Human roles, ordered so that `>=` means "at least as privileged as"."""

    USER = 1
    MODERATOR = 2
    ADMIN = 3
    SUPER_ADMIN = 4

    @property
    def claim(self) -> str:
        """The value of the JWT `role` claim, e.g. "super_admin"."""
        return self.name.lower()

    @classmethod
    def from_claim(cls, value: str) -> Role:
        return cls[value.upper()]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling. Users carry a role; services carry their client id."""

    subject: str
    role: Role | None
    session_id: str = ""
    token: str = ""
    service: str = ""

    @property
    def is_service(self) -> bool:
        return bool(self.service)

    @property
    def user_id(self) -> str:
        return "" if self.is_service else self.subject


REQUEST_ID: ContextVar[str] = ContextVar("request_id", default="")
PRINCIPAL: ContextVar[Principal | None] = ContextVar("principal", default=None)
CLIENT_IP: ContextVar[str] = ContextVar("client_ip", default="")
DEADLINE: ContextVar[float | None] = ContextVar("deadline", default=None)
# The full gRPC method of the current call, e.g. "/vaultpay.wallet.v1.WalletService/SetPin".
METHOD: ContextVar[str] = ContextVar("method", default="")


def remaining_seconds() -> float | None:
    """Seconds left until the caller's deadline, or None when the caller set none."""
    deadline = DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()
