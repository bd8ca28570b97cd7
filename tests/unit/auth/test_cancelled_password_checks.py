"""A password check whose caller goes away still settles its throttle reservation.

Login and ChangePassword count an attempt before bcrypt and give it back when the password
was right. Run in the caller, a cancellation (the gateway's 15 s behind a long hashing queue,
a client's deadline) left the attempt counted as a failure whatever the password: five slow
sign-ins locked out a user with the right one (review of 2026-12-05). The check and its
settlement run on without the caller; a wrong password stays counted.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.unit.auth.fakes import PASSWORD
from tests.unit.auth.test_sign_up_and_security_events import IP, WRONG, World
from vaultpay_auth.domain.errors import PasswordHashingBusyError


def _pause_hashing(world: World) -> tuple[asyncio.Event, asyncio.Event]:
    """Makes password checks wait in the hasher until the second event is set."""
    hashing, release = asyncio.Event(), asyncio.Event()
    first_match = world.hasher.first_match

    async def slow_first_match(spellings: Any, password_hash: str, **kw: Any) -> str | None:
        if kw.get("admitted") is not None:
            kw["admitted"].set()  # a worker took it: the hash runs
        hashing.set()
        await release.wait()
        return await first_match(spellings, password_hash, **kw)

    world.hasher.first_match = slow_first_match  # type: ignore[method-assign,assignment]
    return hashing, release


async def _cancelled_while_hashing(world: World, call: Any) -> asyncio.Event:
    hashing, release = _pause_hashing(world)
    task = asyncio.ensure_future(call)
    await hashing.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return release


async def _settled(world: World) -> None:
    """Waits for the checks settling without their callers, as a shutdown does."""
    assert await world.accounts.drain(within=30.0) == 0  # the bound only guards a hang


@pytest.mark.parametrize(
    ("password", "settled"), [(PASSWORD, True), (WRONG, False)], ids=["right", "wrong"]
)
async def test_a_sign_in_whose_caller_went_away_settles_its_attempt(
    password: str, settled: bool
) -> None:
    world = World()
    world.add_user("ada@example.com")
    release = await _cancelled_while_hashing(
        world, world.accounts.login("ada@example.com", password, IP)
    )
    assert world.throttle.succeeded_for == []  # still hashing
    release.set()
    await _settled(world)
    if settled:
        assert world.throttle.succeeded_for == [("login:ada@example.com", IP)]
    else:
        assert world.throttle.succeeded_for == [] and world.throttle.released == []
    assert world.uow.sessions.sessions == {}  # the caller left: no session opened


async def test_a_password_change_whose_caller_went_away_settles_its_attempt() -> None:
    world = World()
    user = world.add_user("ada@example.com")
    release = await _cancelled_while_hashing(
        world,
        world.accounts.change_password(user.id, "s1", PASSWORD, "a brand new 77 secret", IP),
    )
    assert await world.accounts.drain(within=0.01) == 1  # still hashing: said, not waited
    release.set()
    await _settled(world)
    [(counter, ip)] = world.throttle.succeeded_for
    assert counter.startswith("change-attempts:") and ip == IP
    assert world.uow.users.users[user.id].password_hash == f"hashed:{PASSWORD}"  # unchanged


async def test_a_sign_in_whose_caller_went_away_while_queued_leaves_the_queue() -> None:
    """Review of this change: shielded from the start, a check whose caller went away while it
    still waited for a worker kept its place and was hashed for nobody, and a queue of such
    checks made every later sign-in wait for them. Cancelled before a worker took it, it
    leaves the queue and gives its reservation back (no password was checked)."""
    world = World()
    world.add_user("ada@example.com")
    queued, hashed = asyncio.Event(), []
    first_match = world.hasher.first_match

    async def waits_for_a_worker(spellings: Any, password_hash: str, **kw: Any) -> str | None:
        queued.set()
        await asyncio.Event().wait()  # no worker ever comes: `admitted` is never set
        hashed.append(spellings)
        return await first_match(spellings, password_hash, **kw)

    world.hasher.first_match = waits_for_a_worker  # type: ignore[method-assign,assignment]
    task = asyncio.ensure_future(world.accounts.login("ada@example.com", PASSWORD, IP))
    await queued.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _settled(world)
    assert hashed == []
    assert world.throttle.released == [("login:ada@example.com", IP)]
    assert world.throttle.succeeded_for == []


async def test_an_unknown_emails_first_check_counts_once_its_dummy_hash_has_started() -> None:
    """Review of the change: the first unknown email's check hashes a dummy before it verifies,
    and only the verify said it was admitted: a caller leaving during the dummy hash cancelled
    the check, released its reservation and left the hash running for nobody (after every
    restart, repeatable). The dummy hash admits it too: it runs on and counts."""
    world = World()
    hashing, release = asyncio.Event(), asyncio.Event()
    make_hash = world.hasher.hash

    async def slow_hash(password: str, **kw: Any) -> str:
        if kw.get("admitted") is not None:
            kw["admitted"].set()
        hashing.set()
        await release.wait()
        return await make_hash(password, **kw)

    world.hasher.hash = slow_hash  # type: ignore[method-assign]
    task = asyncio.ensure_future(world.accounts.login("nobody@example.com", WRONG, IP))
    await hashing.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    await _settled(world)
    assert world.throttle.released == []  # counted: its hash ran
    assert world.throttle.succeeded_for == []


async def test_a_busy_refusals_release_is_not_cut_short_by_its_caller_leaving() -> None:
    """Review of the change: a check refused a worker releases its reservation; a caller that
    left during that release cancelled it, and the attempt counted as a wrong password."""
    world = World()
    world.add_user("ada@example.com")
    world.hasher.busy = PasswordHashingBusyError(retry_after_seconds=2)
    releasing, finish = asyncio.Event(), asyncio.Event()
    give_back = world.throttle.release

    async def slow_release(account: str, client_ip: str) -> None:
        releasing.set()
        await finish.wait()
        await give_back(account, client_ip)

    world.throttle.release = slow_release  # type: ignore[method-assign]
    task = asyncio.ensure_future(world.accounts.login("ada@example.com", PASSWORD, IP))
    await releasing.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    finish.set()
    await _settled(world)
    for _ in range(10):  # the shielded release, now unblocked, ends within a few turns
        await asyncio.sleep(0)
    assert world.throttle.released == [("login:ada@example.com", IP)]
