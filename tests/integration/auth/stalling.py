"""The real auth use cases on a unit of work whose session repository stalls where a test
says, shared by the refresh race tests (test_refresh_races.py, test_refresh_lock_modes.py):
each passes the repository class that stalls at its points."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import jwt
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tests.unit.auth.fakes import (
    CountingHasher,
    FakeIssuer,
    FakeLoginThrottle,
    FakeSignUpThrottle,
)
from vaultpay.auth.v1 import auth_pb2
from vaultpay_auth.adapters.repositories import SqlAuthUnitOfWork, SqlSessionRepository
from vaultpay_auth.service_layer.accounts import AccountService
from vaultpay_auth.service_layer.admin import AdminService

__all__ = ["Stall", "StallingSessions", "nothing", "services", "sid"]

Stall = Callable[[], Awaitable[None]]


class StallingSessions(SqlSessionRepository):
    """A session repository that runs `stall` at the points a subclass chooses."""

    def __init__(self, conn: AsyncConnection, stall: Stall) -> None:
        super().__init__(conn)
        self._stall = stall


async def nothing() -> None:
    return None


def services(
    engine: AsyncEngine, sessions: type[StallingSessions], stall: Stall = nothing
) -> tuple[AccountService, AdminService]:
    """AccountService and AdminService on `engine`, their session repository `sessions`."""

    class StallingUnitOfWork(SqlAuthUnitOfWork):
        def _bind(self, conn: AsyncConnection) -> None:
            super()._bind(conn)
            self.sessions = sessions(conn, stall)

    def uow() -> SqlAuthUnitOfWork:
        return StallingUnitOfWork(engine)

    accounts = AccountService(
        uow,
        CountingHasher(),  # hashes read "hashed:<password>"
        FakeIssuer(),
        FakeLoginThrottle(),
        refresh_ttl=timedelta(days=30),
        sign_up_throttle=FakeSignUpThrottle(),
        fingerprint=lambda email: email,
    )
    return accounts, AdminService(uow, fingerprint=lambda email: email)


def sid(tokens: auth_pb2.TokenPair) -> str:
    """The session id an access token names."""
    return str(jwt.decode(tokens.access_token, options={"verify_signature": False})["sid"])
