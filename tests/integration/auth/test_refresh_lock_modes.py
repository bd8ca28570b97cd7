"""What a refresh's locks hold back, on real PostgreSQL, several connections.

Review of 5fbe4fb: a refresh locked its user FOR SHARE (then its session), which every change
of the user waits for. A password change (its UPDATE of the user) waited for every refresh of
the user in flight, even of the session making the change; a sign-in waited too. PostgreSQL
lets a new share locker through while only shares are held, even with a writer queued, so
refreshes of the user's sessions that overlap held a deactivation, a role change or a
password change off for as long as they went on (the compromised-account case). And every
staff action locks every active super_admin FOR UPDATE: one super_admin's stalled refresh
held back all of them. The refresh now locks its session (FOR SHARE; FOR NO KEY UPDATE when
its token is spent), then reads its user FOR KEY SHARE, and the user's writers lock it FOR NO
KEY UPDATE, which a KEY SHARE does not conflict with: they meet a refresh only at the
session's row, the one every revocation updates.

The real use cases run on engines of their own (told apart in pg_stat_activity by name); a
refresh stalls after taking its locks (before it marks its token spent, or before a spent
token's revocation) until the test releases it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.auth.conftest import PASSWORD, AuthStack
from tests.integration.auth.stalling import Stall, StallingSessions, nothing, services, sid
from vaultpay.auth.v1 import auth_pb2
from vaultpay_auth.domain.errors import AccountDisabledError, RefreshTokenReusedError
from vaultpay_auth.service_layer.accounts import AccountService, IssuedTokens
from vaultpay_auth.service_layer.admin import AdminService
from vaultpay_common.context import Principal, Role
from vaultpay_common.db import create_engine

REFRESHER = "refresh-locks-refresh"
OTHER = "refresh-locks-other"
MONITOR = "refresh-locks-monitor"
LOCK_WAIT_LIMIT = 10.0  # seconds a side may take to reach a point, end, or wait for a lock
NEW_PASSWORD = "another horse 43 battery staple"
# Rounds of overlapping refreshes a revocation must not wait through.
ROUNDS = 6


@dataclass
class _Gate:
    """Where a refresh stalls after taking its locks: `reached` once there, until `release`."""

    reached: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def stall(self) -> None:
        self.reached.set()
        await self.release.wait()


class _StallingSessions(StallingSessions):
    """Stalls a refresh with its locks held: before it marks its token spent (a live token's),
    or before it revokes the session (a spent token's)."""

    async def mark_refresh_token_used(self, token_hash: str) -> None:
        await self._stall()
        await super().mark_refresh_token_used(token_hash)

    async def revoke(self, session_id: str, reason: str) -> bool:
        await self._stall()
        return await super().revoke(session_id, reason)


def _services(engine: AsyncEngine, stall: Stall = nothing) -> tuple[AccountService, AdminService]:
    return services(engine, _StallingSessions, stall)


@dataclass
class _Engines:
    refresher: AsyncEngine
    other: AsyncEngine
    monitor: AsyncEngine

    async def waits_for_a_lock(self, application_name: str) -> bool:
        async with self.monitor.connect() as conn:
            waiting = await conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name = :name AND wait_event_type = 'Lock'"
                ),
                {"name": application_name},
            )
            return bool(waiting.scalar_one())

    async def held_by_a_stalled_refresh(self) -> bool:
        """Whether the other side waits for a lock that a refresh stalled in its transaction
        holds (a refresh released before has committed: its backend is idle)."""
        async with self.monitor.connect() as conn:
            held = await conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity w JOIN pg_stat_activity h"
                    " ON h.pid = ANY(pg_blocking_pids(w.pid))"
                    " WHERE w.application_name = :other AND h.application_name = :refresher"
                    " AND h.state = 'idle in transaction'"
                ),
                {"other": OTHER, "refresher": REFRESHER},
            )
            return bool(held.scalar_one())

    async def until(self, what: str, condition: Callable[[], Awaitable[bool]]) -> None:
        deadline = time.monotonic() + LOCK_WAIT_LIMIT
        while not await condition():
            assert time.monotonic() < deadline, what
            await asyncio.sleep(0.01)

    async def until_ended_or_waiting(self, task: asyncio.Task[Any], application_name: str) -> None:
        async def settled() -> bool:
            return task.done() or await self.waits_for_a_lock(application_name)

        await self.until(f"{application_name} neither ended nor waited", settled)

    async def until_stalled_ended_or_waiting(self, task: asyncio.Task[Any], gate: _Gate) -> None:
        async def settled() -> bool:
            return gate.reached.is_set() or task.done() or await self.waits_for_a_lock(REFRESHER)

        await self.until("the refresh neither stalled, ended nor waited", settled)


@pytest.fixture
async def engines(auth: AuthStack) -> AsyncIterator[_Engines]:
    made = [
        create_engine(auth.dbs.auth_app_dsn, pool_size=4, application_name=name)
        for name in (REFRESHER, OTHER, MONITOR)
    ]
    try:
        yield _Engines(*made)
    finally:
        for engine in made:
            await engine.dispose()


async def _set_test_hash(engine: AsyncEngine, user_id: str) -> None:
    """The user's password hashed as CountingHasher checks it (after the server's sign-ins)."""
    async with engine.begin() as conn:
        await conn.execute(
            text("UPDATE users SET password_hash = :hash WHERE id = :id"),
            {"hash": f"hashed:{PASSWORD}", "id": user_id},
        )


def _super_admin(user: auth_pb2.User) -> Principal:
    return Principal(user.user_id, Role.SUPER_ADMIN, session_id=str(uuid.uuid4()))


class _Refreshes:
    """Refreshes run on the refresher's engine, each stalled at its gate; `settle` releases
    every one left and waits for all (the other side's task too), whatever the test's end."""

    def __init__(self, engines: _Engines) -> None:
        self._engines = engines
        self.gates: list[_Gate] = []
        self.tasks: list[asyncio.Task[Any]] = []

    async def start(self, refresh_token: str) -> tuple[asyncio.Task[IssuedTokens], _Gate]:
        gate = _Gate()
        accounts, _ = _services(self._engines.refresher, gate.stall)
        task = asyncio.create_task(accounts.refresh(refresh_token, ""))
        self.gates.append(gate)
        self.tasks.append(task)
        await self._engines.until_stalled_ended_or_waiting(task, gate)
        return task, gate

    async def settle(self, *others: asyncio.Task[Any]) -> None:
        for gate in self.gates:
            gate.release.set()
        await asyncio.gather(*self.tasks, *others, return_exceptions=True)


@pytest.mark.parametrize("how", ["password_change", "login"])
async def test_a_change_of_the_user_does_not_wait_for_a_refresh_of_theirs(
    auth: AuthStack, engines: _Engines, how: str
) -> None:
    """A refresh of the user's session stalls holding its locks; the user changes their
    password from that session (the session stays, their other one is revoked), or signs in.
    Each waited for the refresh's share lock on the user; neither waits now, and the refresh
    then succeeds (the password change kept its session)."""
    user, tokens = await auth.user_with_token()
    other_session = await auth.login(user.email)
    await _set_test_hash(engines.other, user.user_id)
    accounts, _ = _services(engines.other)
    refreshes = _Refreshes(engines)
    change: asyncio.Task[Any] | None = None
    try:
        refreshing, gate = await refreshes.start(tokens.refresh_token)
        assert gate.reached.is_set(), "the refresh did not get its locks"
        if how == "password_change":
            change = asyncio.create_task(
                accounts.change_password(user.user_id, sid(tokens), PASSWORD, NEW_PASSWORD, "")
            )
        else:
            change = asyncio.create_task(accounts.login(user.email, PASSWORD, ""))
        await engines.until_ended_or_waiting(change, OTHER)
        assert change.done(), f"the {how} waited for a refresh of the user"
        change.result()  # it succeeded
        gate.release.set()
        issued = await refreshing
    finally:
        await refreshes.settle(*([change] if change is not None else []))
    if how == "password_change":
        assert change.result() == 1  # the other session, not the refreshing one
        with pytest.raises(RefreshTokenReusedError):
            await _services(engines.refresher)[0].refresh(other_session.refresh_token, "")
    # The refreshed session is live: its new token is accepted.
    await _services(engines.refresher)[0].refresh(issued.refresh_token, "")


REVOKERS = {
    "deactivation": AccountDisabledError,
    "role_change": RefreshTokenReusedError,
    "password_change": RefreshTokenReusedError,
}


@pytest.mark.parametrize("how", list(REVOKERS))
async def test_overlapping_refreshes_of_the_user_do_not_hold_off_a_revocation(
    auth: AuthStack, engines: _Engines, how: str
) -> None:
    """Two sessions of the user refresh in turns, each refresh starting while the one before
    stalls with its locks; a deactivation (a role change, a password change from a third
    session) starts behind the first. It waited for every one of them, each share lock on the
    user let through past it: for as long as the refreshes went on. It now waits at most for
    those holding a session it revokes when it gets there (one per session: a session's next
    refresh needs the token this one issues), and the newest tokens of both sessions are then
    refused."""
    user, first = await auth.user_with_token()
    second = await auth.login(user.email)
    changer = await auth.login(user.email)  # the password change's own session
    await _set_test_hash(engines.other, user.user_id)
    owner, _ = await auth.staff("SUPER_ADMIN")
    accounts, admin = _services(engines.other)

    def revoking() -> Coroutine[Any, Any, object]:
        if how == "deactivation":
            return admin.deactivate(_super_admin(owner), user.user_id, "fraud", client_ip="")
        if how == "role_change":
            return admin.set_role(
                _super_admin(owner), user.user_id, Role.MODERATOR, "review", client_ip=""
            )
        return accounts.change_password(user.user_id, sid(changer), PASSWORD, NEW_PASSWORD, "")

    chains = [first.refresh_token, second.refresh_token]  # each session's newest token
    refreshes = _Refreshes(engines)
    revocation: asyncio.Task[Any] | None = None
    rounds_waited = 0
    try:
        held, gate = await refreshes.start(chains[0])
        assert gate.reached.is_set(), "the first refresh did not get its locks"
        revocation = asyncio.create_task(revoking())
        await engines.until_ended_or_waiting(revocation, OTHER)
        assert not revocation.done(), "the revocation did not wait for a refresh it revokes"
        held_chain = 0
        while not revocation.done() and rounds_waited < ROUNDS:
            rounds_waited += 1
            chain = 1 - held_chain
            # The other session's refresh, while the one before still holds its locks.
            following, following_gate = await refreshes.start(chains[chain])
            gate.release.set()
            with contextlib.suppress(AccountDisabledError, RefreshTokenReusedError):
                # Refused when the revocation reached its session first.
                chains[held_chain] = (await held).refresh_token

            async def settled() -> bool:
                assert revocation is not None
                return revocation.done() or await engines.held_by_a_stalled_refresh()

            await engines.until("the revocation neither ended nor waited for a refresh", settled)
            held, gate, held_chain = following, following_gate, chain
    finally:
        await refreshes.settle(*([revocation] if revocation is not None else []))
    # One round per session at most: the refresh holding it when the revocation gets there.
    assert revocation.done() and rounds_waited <= len(chains), (
        f"the revocation waited for {rounds_waited} rounds of refreshes begun after it"
    )
    revocation.result()  # it succeeded
    for token in chains:
        with pytest.raises(REVOKERS[how]):
            await _services(engines.refresher)[0].refresh(token, "")


@pytest.mark.parametrize("how", ["role_change", "deactivation"])
@pytest.mark.parametrize("actor", ["another super_admin", "the refreshing super_admin"])
async def test_a_super_admins_stalled_refresh_holds_back_no_staff_action(
    auth: AuthStack, engines: _Engines, how: str, actor: str
) -> None:
    """A super_admin's refresh stalls holding its locks; a staff action on another user runs,
    by another super_admin or by them. Every staff action locks every active super_admin,
    FOR UPDATE, and waited for the refresh's share lock (up to the 120 s idle timeout, for
    every staff action on anyone); it does not now."""
    refreshing_admin, admin_tokens = await auth.staff("SUPER_ADMIN")
    acting = refreshing_admin
    if actor == "another super_admin":
        acting, _ = await auth.staff("SUPER_ADMIN")
    target, _ = await auth.user_with_token()
    _, admin = _services(engines.other)
    refreshes = _Refreshes(engines)
    action: asyncio.Task[Any] | None = None
    try:
        refreshing, gate = await refreshes.start(admin_tokens.refresh_token)
        assert gate.reached.is_set(), "the refresh did not get its locks"
        principal = _super_admin(acting)
        if how == "role_change":
            action = asyncio.create_task(
                admin.set_role(principal, target.user_id, Role.MODERATOR, "review", client_ip="")
            )
        else:
            action = asyncio.create_task(
                admin.deactivate(principal, target.user_id, "fraud", client_ip="")
            )
        await engines.until_ended_or_waiting(action, OTHER)
        assert action.done(), f"the {how} waited for a super_admin's refresh"
        action.result()  # it succeeded
        gate.release.set()
        await refreshing  # the super_admin's own session is untouched
    finally:
        await refreshes.settle(*([action] if action is not None else []))


async def _session_revoked(engine: AsyncEngine, session_id: str) -> str | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                text("SELECT revoked_at, revoke_reason FROM sessions WHERE id = :id"),
                {"id": session_id},
            )
        ).one()
    return None if row.revoked_at is None else str(row.revoke_reason)


@pytest.mark.parametrize(
    "first", ["the live token", "a spent token"], ids=["live-first", "spent-first"]
)
async def test_a_spent_and_the_live_token_of_a_session_at_once_end_it(
    auth: AuthStack, engines: _Engines, first: str
) -> None:
    """Guard. The live token of a session and a spent one (a thief's copy) presented at once,
    the first stalled with its locks: the second waits for it (the spent one's revocation
    takes the session's lock an UPDATE takes at once), neither deadlocks, and the session
    ends revoked for reuse, whatever the new tokens the live one was given."""
    _, spent = await auth.user_with_token()
    session_id = sid(spent)
    live = await _services(engines.refresher)[0].refresh(spent.refresh_token, "")
    refreshes = _Refreshes(engines)
    second: asyncio.Task[Any] | None = None
    tokens = [live.refresh_token, spent.refresh_token]
    if first == "a spent token":
        tokens.reverse()
    try:
        stalled, gate = await refreshes.start(tokens[0])
        assert gate.reached.is_set(), "the first presentation did not get its locks"
        accounts, _ = _services(engines.other)
        second = asyncio.create_task(accounts.refresh(tokens[1], ""))
        await engines.until_ended_or_waiting(second, OTHER)
        assert not second.done(), "the second presentation did not wait for the first"
        gate.release.set()
        outcomes = await asyncio.gather(stalled, second, return_exceptions=True)
    finally:
        await refreshes.settle(*([second] if second is not None else []))
    by_token = dict(zip(tokens, outcomes, strict=True))
    assert isinstance(by_token[spent.refresh_token], RefreshTokenReusedError)
    issued = by_token[live.refresh_token]
    if first == "the live token":
        assert isinstance(issued, IssuedTokens)
        with pytest.raises(RefreshTokenReusedError):
            await _services(engines.refresher)[0].refresh(issued.refresh_token, "")
    else:
        assert isinstance(issued, RefreshTokenReusedError)
    assert await _session_revoked(engines.monitor, session_id) == "refresh_token_reuse"


async def test_two_spent_tokens_of_a_session_at_once_end_it_without_a_deadlock(
    auth: AuthStack, engines: _Engines
) -> None:
    """Guard. Two spent tokens of one session presented at once, the first stalled before
    its revocation: the second waits for its lock (not a share both hold and then upgrade:
    that deadlocked), and both are refused as reuse."""
    _, oldest = await auth.user_with_token()
    session_id = sid(oldest)
    accounts, _ = _services(engines.refresher)
    older = await accounts.refresh(oldest.refresh_token, "")
    await accounts.refresh(older.refresh_token, "")
    refreshes = _Refreshes(engines)
    second: asyncio.Task[Any] | None = None
    try:
        stalled, gate = await refreshes.start(oldest.refresh_token)
        assert gate.reached.is_set(), "the first presentation did not get its locks"
        second = asyncio.create_task(_services(engines.other)[0].refresh(older.refresh_token, ""))
        await engines.until_ended_or_waiting(second, OTHER)
        assert not second.done(), "the second presentation did not wait for the first"
        gate.release.set()
        outcomes = await asyncio.gather(stalled, second, return_exceptions=True)
    finally:
        await refreshes.settle(*([second] if second is not None else []))
    assert all(isinstance(outcome, RefreshTokenReusedError) for outcome in outcomes), outcomes
    assert await _session_revoked(engines.monitor, session_id) == "refresh_token_reuse"
