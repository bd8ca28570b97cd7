"""A refresh against a concurrent revocation of its session, on real PostgreSQL, two connections.

Review of 2026-12-05: a refresh read its session and its user without locks (only the
refresh-token row was FOR UPDATE), and no revocation touches that row. A refresh that had read
the session as live and then stalled (a process or VM pause) signed a new access token after
the session's revocation had committed, and the token's lifetime counts from its signing: it
outlived the peers' memory of the revocation (kept 990 s from its delivery). The refresh now
locks its session FOR SHARE (and then key-shares its user), and every revocation updates the
session row: a revocation of its session commits after the refresh does, or the refresh waits
for it and is refused (test_refresh_lock_modes.py: what the refresh no longer holds back).

The real use cases run on two engines of their own (told apart in pg_stat_activity by name),
one side stalled inside its transaction while the other runs.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.auth.conftest import PASSWORD, AuthStack
from tests.integration.auth.stalling import Stall, StallingSessions, nothing, services, sid
from vaultpay.auth.v1 import auth_pb2
from vaultpay_auth.domain.errors import AccountDisabledError, RefreshTokenReusedError
from vaultpay_auth.service_layer.accounts import AccountService
from vaultpay_auth.service_layer.admin import AdminService
from vaultpay_common.context import Principal, Role
from vaultpay_common.db import create_engine

REFRESHER = "refresh-race-refresh"
REVOKER = "refresh-race-revoke"
LOCK_WAIT_LIMIT = 10.0  # seconds the other side may take to end or to wait for a lock
NEW_PASSWORD = "another horse 43 battery staple"
# The four use cases that revoke a session, and what its refresh token answers after.
REVOCATIONS = {
    "logout": RefreshTokenReusedError,
    "password_change": RefreshTokenReusedError,
    "role_change": RefreshTokenReusedError,
    "deactivation": AccountDisabledError,
}


class _StallingSessions(StallingSessions):
    """Runs `stall` inside the transaction: a refresh's before it marks its token used (it has
    read the session and the user, and not yet signed), a revocation's once it has revoked."""

    async def mark_refresh_token_used(self, token_hash: str) -> None:
        await self._stall()
        await super().mark_refresh_token_used(token_hash)

    async def revoke(self, session_id: str, reason: str) -> bool:
        revoked = await super().revoke(session_id, reason)
        await self._stall()
        return revoked

    async def revoke_all_for_user(self, user_id: str, reason: str, *, except_id: str = "") -> int:
        revoked = await super().revoke_all_for_user(user_id, reason, except_id=except_id)
        await self._stall()
        return revoked


def _services(engine: AsyncEngine, stall: Stall = nothing) -> tuple[AccountService, AdminService]:
    return services(engine, _StallingSessions, stall)


@pytest.fixture
async def engines(auth: AuthStack) -> AsyncIterator[tuple[AsyncEngine, AsyncEngine]]:
    """The refresh's engine and the revocation's."""
    refresher = create_engine(auth.dbs.auth_app_dsn, pool_size=2, application_name=REFRESHER)
    revoker = create_engine(auth.dbs.auth_app_dsn, pool_size=2, application_name=REVOKER)
    try:
        yield refresher, revoker
    finally:
        await refresher.dispose()
        await revoker.dispose()


async def _user_and_actor(
    auth: AuthStack, engine: AsyncEngine, how: str
) -> tuple[auth_pb2.User, auth_pb2.TokenPair, Principal | None]:
    """A signed-in user (their password hashed as CountingHasher checks it, for the password
    change), and the super_admin who changes their role or deactivates them."""
    user, tokens = await auth.user_with_token()
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE users SET password_hash = :hash WHERE id = :id"),
            {"hash": f"hashed:{PASSWORD}", "id": user.user_id},
        )
    if how not in ("role_change", "deactivation"):
        return user, tokens, None
    owner, _ = await auth.staff("SUPER_ADMIN")
    return user, tokens, Principal(owner.user_id, Role.SUPER_ADMIN, session_id=str(uuid.uuid4()))


async def _revoke(
    how: str,
    accounts: AccountService,
    admin: AdminService,
    user: auth_pb2.User,
    session_id: str,
    actor: Principal | None,
) -> None:
    """Revokes the session through the real use case."""
    if how == "logout":
        await accounts.logout(session_id, user_id=user.user_id)
    elif how == "password_change":
        # From another session of theirs: this one is revoked with the rest.
        await accounts.change_password(user.user_id, str(uuid.uuid4()), PASSWORD, NEW_PASSWORD, "")
    else:
        assert actor is not None
        if how == "role_change":
            await admin.set_role(actor, user.user_id, Role.MODERATOR, "review", client_ip="")
        else:
            await admin.deactivate(actor, user.user_id, "review", client_ip="")


async def _waits_for_a_lock(engine: AsyncEngine, application_name: str) -> bool:
    async with engine.connect() as conn:
        waiting = await conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE application_name = :name AND wait_event_type = 'Lock'"
            ),
            {"name": application_name},
        )
        return bool(waiting.scalar_one())


async def _until_ended_or_waiting(
    task: asyncio.Task[Any], engine: AsyncEngine, application_name: str
) -> None:
    deadline = time.monotonic() + LOCK_WAIT_LIMIT
    while not task.done() and not await _waits_for_a_lock(engine, application_name):
        assert time.monotonic() < deadline, f"{application_name} neither ended nor waited"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("how", list(REVOCATIONS))
async def test_a_refresh_that_read_its_session_live_commits_before_its_revocation(
    auth: AuthStack, engines: tuple[AsyncEngine, AsyncEngine], how: str
) -> None:
    """The refresh stalls after reading its session and user, before signing; the revocation
    runs meanwhile on another connection. It committed, and the refresh then signed a token
    for the revoked session. It now waits for the refresh's locks, and commits after it."""
    refresher, revoker = engines
    user, tokens, actor = await _user_and_actor(auth, revoker, how)
    revoking: list[asyncio.Task[None]] = []
    committed_during_refresh: list[bool] = []
    accounts, admin = _services(revoker)

    async def stall() -> None:
        task = asyncio.create_task(_revoke(how, accounts, admin, user, sid(tokens), actor))
        revoking.append(task)
        await _until_ended_or_waiting(task, revoker, REVOKER)
        committed_during_refresh.append(task.done() and task.exception() is None)

    stalling, _ = _services(refresher, stall)
    try:
        issued = await stalling.refresh(tokens.refresh_token, "")
    finally:
        await asyncio.gather(*revoking)
    assert committed_during_refresh == [False], (
        "the revocation committed while the refresh ran, and the refresh signed a token after it"
    )
    # The revocation went on once the refresh committed: the new tokens' session is revoked.
    with pytest.raises(REVOCATIONS[how]):
        await _services(refresher)[0].refresh(issued.refresh_token, "")


@pytest.mark.parametrize("how", list(REVOCATIONS))
async def test_a_refresh_waits_for_a_revocation_in_progress_and_is_refused(
    auth: AuthStack, engines: tuple[AsyncEngine, AsyncEngine], how: str
) -> None:
    """The revocation stalls after revoking, before its commit; a refresh of the session runs
    meanwhile. It read the session as live (the revocation not committed yet) and signed a
    token while the revocation went on. It now waits, and is refused once it commits."""
    refresher, revoker = engines
    user, tokens, actor = await _user_and_actor(auth, revoker, how)
    refreshing: list[asyncio.Task[Any]] = []
    refreshed_during_revocation: list[bool] = []

    async def stall() -> None:
        task = asyncio.create_task(_services(refresher)[0].refresh(tokens.refresh_token, ""))
        refreshing.append(task)
        await _until_ended_or_waiting(task, refresher, REFRESHER)
        refreshed_during_revocation.append(task.done() and task.exception() is None)

    accounts, admin = _services(revoker, stall)
    await _revoke(how, accounts, admin, user, sid(tokens), actor)
    assert refreshed_during_revocation == [False], (
        "a refresh signed a token while a revocation of its session was in progress"
    )
    with pytest.raises(REVOCATIONS[how]):
        await refreshing[0]
