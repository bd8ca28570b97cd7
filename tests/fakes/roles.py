"""auth's answer to "what is this user's role?", for the rank rule of staff actions (wallet's
staff changes, kyc's reviews)."""

from __future__ import annotations

from vaultpay_common.context import Role
from vaultpay_common.errors import UnavailableError

__all__ = ["FakeUserRoles"]


class FakeUserRoles:
    """auth's roles: a user not listed in `roles` is a plain user; `down=True` is auth
    unreachable (raises UnavailableError, as the client does). `asked` records each lookup."""

    def __init__(self, roles: dict[str, Role] | None = None) -> None:
        self.roles = dict(roles or {})
        self.down = False
        self.asked: list[str] = []

    async def role_of(self, user_id: str) -> Role:
        self.asked.append(user_id)
        if self.down:
            raise UnavailableError("auth is down")
        return self.roles.get(user_id, Role.USER)
