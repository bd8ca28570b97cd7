"""A sign-in stores a new hash when the stored one was made at another bcrypt cost than the
setting now: otherwise, after the cost was raised, an existing email signed in measurably
faster (or slower) than an unknown one, hashed at today's cost, and showed that the account
exists (security review, 2026-12-04 night)."""

from __future__ import annotations

import asyncio

import bcrypt
import pytest

from tests.unit.auth.fakes import PASSWORD
from tests.unit.auth.test_sign_up_and_security_events import IP, World
from vaultpay_auth.adapters.passwords import BcryptPasswordHasher
from vaultpay_auth.domain.errors import InvalidCredentialsError, PasswordHashingBusyError
from vaultpay_common.errors import AbortedError


def _stored(world: World, user_id: str) -> str:
    return world.uow.users.users[user_id].password_hash


async def test_a_sign_in_upgrades_a_hash_of_another_cost_in_its_own_transaction() -> None:
    world = World()
    user = world.add_user()
    world.hasher.cost = "13"
    await world.accounts.login(user.email, PASSWORD, IP)
    assert _stored(world, user.id) == f"hashed13:{PASSWORD}"
    assert world.hasher.hashes == 1
    await world.accounts.login(user.email, PASSWORD, IP)  # current now: no second hash
    assert world.hasher.hashes == 1


async def test_a_hash_of_the_current_cost_is_left_alone() -> None:
    world = World()
    user = world.add_user()
    await world.accounts.login(user.email, PASSWORD, IP)
    assert (_stored(world, user.id), world.hasher.hashes) == (f"hashed:{PASSWORD}", 0)


async def test_a_wrong_password_upgrades_nothing() -> None:
    world = World()
    user = world.add_user()
    world.hasher.cost = "13"
    with pytest.raises(InvalidCredentialsError):
        await world.accounts.login(user.email, "not the password 1", IP)
    assert (_stored(world, user.id), world.hasher.hashes) == (f"hashed:{PASSWORD}", 0)


async def test_a_busy_hasher_skips_the_upgrade_never_the_sign_in() -> None:
    world = World()
    user = world.add_user()
    world.hasher.cost = "13"
    hash_once = world.hasher.hash

    async def busy(password: str, **kwargs: object) -> str:
        raise PasswordHashingBusyError(1)

    world.hasher.hash = busy  # type: ignore[method-assign]
    tokens, _ = await world.accounts.login(user.email, PASSWORD, IP)
    assert tokens.access_token
    assert _stored(world, user.id) == f"hashed:{PASSWORD}"
    world.hasher.hash = hash_once  # type: ignore[method-assign]


async def test_concurrent_sign_ins_that_both_upgrade_both_succeed() -> None:
    """The second found the hash changed under its lock (the first's upgrade): the same
    password, so not a password change; it is checked against the new hash and signs in."""
    world = World()
    user = world.add_user()
    world.hasher.cost = "13"
    both_hashing, release = asyncio.Event(), asyncio.Event()
    hashing = 0
    hash_now = world.hasher.hash

    async def waits_for_both(password: str, **kwargs: object) -> str:
        nonlocal hashing
        hashing += 1
        if hashing == 2:
            both_hashing.set()
        await release.wait()
        return await hash_now(password)

    world.hasher.hash = waits_for_both  # type: ignore[method-assign]
    first = asyncio.ensure_future(world.accounts.login(user.email, PASSWORD, IP))
    second = asyncio.ensure_future(world.accounts.login(user.email, PASSWORD, IP))
    await asyncio.wait_for(both_hashing.wait(), 10)
    release.set()
    for tokens, _ in await asyncio.gather(first, second):
        assert tokens.access_token
    assert _stored(world, user.id) == f"hashed13:{PASSWORD}"


async def test_a_password_changed_while_bcrypt_ran_still_refuses_the_old_one() -> None:
    world = World()
    user = world.add_user()
    first_match_now = world.hasher.first_match

    async def changed_meanwhile(
        spellings: tuple[str, ...], password_hash: str, **kwargs: object
    ) -> str | None:
        matched = await first_match_now(spellings, password_hash)
        world.uow.users.users[user.id].password_hash = "hashed:an entirely new one 1"
        return matched

    world.hasher.first_match = changed_meanwhile  # type: ignore[method-assign,assignment]
    with pytest.raises(InvalidCredentialsError):
        await world.accounts.login(user.email, PASSWORD, IP)


@pytest.mark.parametrize(("stored_cost", "stale"), [(4, False), (5, True)])
def test_bcrypt_hashes_of_another_cost_need_a_new_hash(stored_cost: int, stale: bool) -> None:
    hasher = BcryptPasswordHasher(b"p" * 32, 4, workers=1)
    try:
        made = bcrypt.hashpw(b"x", bcrypt.gensalt(stored_cost)).decode()
        assert hasher.needs_rehash(made) is stale
        assert hasher.needs_rehash("not a bcrypt hash")
    finally:
        hasher.close()


async def _change_while_the_hash_becomes(world: World, user_id: str, stored: str) -> None:
    """ChangePassword, with the stored hash replaced by `stored` while its new hash is made
    (a sign-in's upgrade, or a real change, committing meanwhile)."""
    hash_now = world.hasher.hash

    async def replaced_meanwhile(password: str, **kwargs: object) -> str:
        world.uow.users.users[user_id].password_hash = stored
        return await hash_now(password)

    world.hasher.hash = replaced_meanwhile  # type: ignore[method-assign]
    await world.accounts.change_password(user_id, "s1", PASSWORD, "a brand new 77 secret", IP)


async def test_a_password_change_racing_a_sign_ins_upgrade_goes_through() -> None:
    world = World()
    user = world.add_user()
    await _change_while_the_hash_becomes(world, user.id, f"hashed13:{PASSWORD}")
    assert _stored(world, user.id) == "hashed:a brand new 77 secret"


async def test_a_password_change_racing_another_change_is_aborted() -> None:
    world = World()
    user = world.add_user()
    with pytest.raises(AbortedError):
        await _change_while_the_hash_becomes(world, user.id, "hashed:someone elses 9 choice")
    assert _stored(world, user.id) == "hashed:someone elses 9 choice"
