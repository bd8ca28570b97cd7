"""One password, whatever the keyboard: passwords are judged and hashed in Unicode NFC (NIST SP
800-63B 5.1.1.2), and a hash made before, of the password as typed, still verifies.

"\u00e9" is typed as one character (U+00E9) on most keyboards and as "e" and a combining acute
(U+0301) on others (macOS, some input methods, a paste). Hashed as typed, they were two
passwords: a user who registered on one device was refused on the other. A typed password is
checked as NFC first, then, only when it differs, as typed (one more bcrypt, in the same
attempt); a sign-in proven as typed re-hashes the NFC form, after which either spelling works.
"""

from __future__ import annotations

import unicodedata
from datetime import timedelta
from typing import Any

import pytest

from tests.unit.auth.fakes import (
    FakeAuthUnitOfWork,
    FakeIssuer,
    FakeLoginThrottle,
    FakeSignUpThrottle,
    make_user,
)
from tests.unit.auth.test_sign_up_and_security_events import IP, KEY, World
from vaultpay_auth.adapters.passwords import BcryptPasswordHasher
from vaultpay_auth.domain.errors import InvalidCredentialsError, PasswordHashingBusyError
from vaultpay_auth.domain.security_events import EmailFingerprint
from vaultpay_auth.service_layer.accounts import AccountService
from vaultpay_common.errors import ValidationError

# "crème brûlée 42 façade": precomposed (NFC) and decomposed (NFD), the same password.
PRECOMPOSED = "cr\u00e8me br\u00fbl\u00e9e 42 fa\u00e7ade"
DECOMPOSED = "cre\u0300me bru\u0302le\u0301e 42 fac\u0327ade"
EMAIL = "zoe@example.com"


def _stored(world: World, user_id: str) -> str:
    return world.uow.users.users[user_id].password_hash


def _verifies(world: World) -> int:
    return sum(1 for kind, _ in world.hasher.calls if kind == "verify")


def _legacy_user(world: World, typed: str) -> str:
    """A user whose hash was made, before the change, of `typed` as typed."""
    user = make_user(EMAIL, typed)
    world.uow.users.users[user.id] = user
    return user.id


@pytest.mark.parametrize(
    ("registered", "signs_in"),
    [(DECOMPOSED, PRECOMPOSED), (PRECOMPOSED, DECOMPOSED), (DECOMPOSED, DECOMPOSED)],
    ids=["decomposed-then-precomposed", "precomposed-then-decomposed", "decomposed-twice"],
)
async def test_a_password_registered_in_one_spelling_signs_in_with_either(
    registered: str, signs_in: str
) -> None:
    world = World()
    user = await world.accounts.register(EMAIL, registered, "Zo\u00eb", IP)
    assert _stored(world, user.id) == f"hashed:{PRECOMPOSED}"  # hashed as NFC
    tokens, _ = await world.accounts.login(EMAIL, signs_in, IP)
    assert tokens.access_token
    assert _verifies(world) == 1  # the NFC form matched: no second bcrypt


async def test_a_hash_of_the_decomposed_form_still_verifies_and_is_rehashed_in_nfc() -> None:
    """A hash made before, of the decomposed form as typed: the NFC form does not match it,
    the form as typed does (a second bcrypt, one attempt), and the sign-in re-hashes the NFC
    form in place, so the precomposed spelling signs in from then on."""
    world = World()
    user_id = _legacy_user(world, DECOMPOSED)
    tokens, _ = await world.accounts.login(EMAIL, DECOMPOSED, IP)
    assert tokens.access_token
    assert _verifies(world) == 2
    assert world.throttle.reserved == [("login:" + EMAIL, IP)]  # one attempt, not two
    assert world.throttle.succeeded_for == [("login:" + EMAIL, IP)]
    assert _stored(world, user_id) == f"hashed:{PRECOMPOSED}"
    world.hasher.calls.clear()
    tokens, _ = await world.accounts.login(EMAIL, PRECOMPOSED, IP)
    assert tokens.access_token
    assert (_verifies(world), world.hasher.hashes) == (1, 0)
    assert _stored(world, user_id) == f"hashed:{PRECOMPOSED}"


async def test_a_wrong_decomposed_password_costs_the_same_for_a_known_and_an_unknown_email() -> (
    None
):
    """Two checks for a known account's wrong password typed decomposed, two for an unknown
    email's (against the dummy hash), one attempt each; a precomposed one costs one check."""
    known, unknown = World(), World()
    _legacy_user(known, DECOMPOSED)
    wrong = "cre\u0300me bru\u0302le\u0301e 43 fac\u0327ade"
    for world, email in ((known, EMAIL), (unknown, "nobody@example.com")):
        with pytest.raises(InvalidCredentialsError):
            await world.accounts.login(email, wrong, IP)
        assert _verifies(world) == 2
        assert world.throttle.reserved == [("login:" + email, IP)]
        assert world.throttle.succeeded_for == world.throttle.released == []
        world.hasher.calls.clear()
        with pytest.raises(InvalidCredentialsError):
            await world.accounts.login(email, unicodedata.normalize("NFC", wrong), IP)
        assert _verifies(world) == 1


async def test_both_spellings_are_checked_in_one_workers_turn() -> None:
    """Review of 2026-12-05: queued again for the form as typed, a legacy user's right
    password could be refused a worker after its NFC form was checked, and was counted as a
    failure. Both checks now run in one turn: one call to the hasher, whose refusal comes
    before any check (and gives the attempt back)."""
    world = World()
    _legacy_user(world, DECOMPOSED)
    first_match, turns = world.hasher.first_match, []

    async def one_turn(spellings: tuple[str, ...], password_hash: str, **kw: Any) -> str | None:
        turns.append(spellings)
        return await first_match(spellings, password_hash, **kw)

    world.hasher.first_match = one_turn  # type: ignore[method-assign,assignment]
    tokens, _ = await world.accounts.login(EMAIL, DECOMPOSED, IP)
    assert tokens.access_token
    assert turns == [(unicodedata.normalize("NFC", DECOMPOSED), DECOMPOSED)]
    assert _verifies(world) == 2

    busy = World()
    _legacy_user(busy, DECOMPOSED)
    busy.hasher.busy = PasswordHashingBusyError(3)
    with pytest.raises(PasswordHashingBusyError):
        await busy.accounts.login(EMAIL, DECOMPOSED, IP)
    assert busy.throttle.released == [("login:" + EMAIL, IP)]  # nothing was checked


async def test_a_password_change_proves_a_decomposed_hash_and_stores_the_new_one_in_nfc() -> None:
    world = World()
    user_id = _legacy_user(world, DECOMPOSED)
    new_decomposed = "nai\u0308ve pin\u0303ata 77 re\u0301sume\u0301"
    await world.accounts.change_password(user_id, "s1", DECOMPOSED, new_decomposed, IP)
    assert _stored(world, user_id) == "hashed:" + unicodedata.normalize("NFC", new_decomposed)
    assert world.throttle.reserved == [("change-attempts:" + user_id, IP)]
    tokens, _ = await world.accounts.login(EMAIL, unicodedata.normalize("NFC", new_decomposed), IP)
    assert tokens.access_token


async def test_the_current_password_in_another_spelling_is_not_a_new_password() -> None:
    world = World()
    user = await world.accounts.register(EMAIL, PRECOMPOSED, "Zo\u00eb", IP)
    with pytest.raises(ValidationError) as refused:
        await world.accounts.change_password(user.id, "s1", PRECOMPOSED, DECOMPOSED, IP)
    assert [v.description for v in refused.value.violations] == [
        "must differ from the current password"
    ]
    assert world.throttle.reserved == []  # input, not a counted guess


async def test_the_length_rule_counts_the_characters_of_the_nfc_form() -> None:
    """128 characters in NFC are 128, however many the decomposed form has; 11 in NFC are too
    few, though decomposed they are 14."""
    world = World()
    longest = (PRECOMPOSED + " d\u00e9j\u00e0 vu ") * 5
    longest = longest[:128]
    typed = unicodedata.normalize("NFD", longest)
    assert len(typed) > 128
    user = await world.accounts.register(EMAIL, typed, "Zo\u00eb", IP)
    assert _stored(world, user.id) == f"hashed:{longest}"
    short = unicodedata.normalize("NFD", "Zo\u00eb d\u00e9j\u00e0 4!")
    assert len(short) >= 12
    with pytest.raises(ValidationError) as refused:
        await world.accounts.register("other@example.com", short, "Zo\u00eb", IP)
    assert [v.description for v in refused.value.violations] == ["must be 12 to 128 characters"]


def _accounts_with_bcrypt(
    hasher: BcryptPasswordHasher,
) -> tuple[AccountService, FakeAuthUnitOfWork]:
    uow = FakeAuthUnitOfWork()
    accounts = AccountService(
        lambda: uow,
        hasher,
        FakeIssuer(),
        FakeLoginThrottle(),
        refresh_ttl=timedelta(days=30),
        sign_up_throttle=FakeSignUpThrottle(),
        fingerprint=EmailFingerprint(KEY),
    )
    return accounts, uow


@pytest.mark.parametrize(
    ("registered", "signs_in"),
    [(DECOMPOSED, PRECOMPOSED), (PRECOMPOSED, DECOMPOSED)],
    ids=["decomposed-then-precomposed", "precomposed-then-decomposed"],
)
async def test_with_bcrypt_a_new_hash_of_either_spelling_verifies_with_the_other(
    registered: str, signs_in: str
) -> None:
    hasher = BcryptPasswordHasher(b"p" * 32, 4, workers=1)
    try:
        accounts, _ = _accounts_with_bcrypt(hasher)
        await accounts.register(EMAIL, registered, "Zo\u00eb", IP)
        tokens, _ = await accounts.login(EMAIL, signs_in, IP)
        assert tokens.access_token
        tokens, _ = await accounts.login(EMAIL, registered, IP)
        assert tokens.access_token
    finally:
        hasher.close()


async def test_with_bcrypt_a_hash_of_the_decomposed_form_verifies_with_both_spellings() -> None:
    """Made before the change, of the decomposed form as typed: the decomposed spelling signs
    in (the fallback), which re-hashes the NFC form; the precomposed one signs in then."""
    hasher = BcryptPasswordHasher(b"p" * 32, 4, workers=1)
    try:
        accounts, uow = _accounts_with_bcrypt(hasher)
        user = make_user(EMAIL)
        user.password_hash = await hasher.hash(DECOMPOSED)
        uow.users.users[user.id] = user
        tokens, _ = await accounts.login(EMAIL, DECOMPOSED, IP)
        assert tokens.access_token
        rehashed = uow.users.users[user.id].password_hash
        assert rehashed != user.password_hash
        assert await hasher.verify(PRECOMPOSED, rehashed)
        tokens, _ = await accounts.login(EMAIL, PRECOMPOSED, IP)
        assert tokens.access_token
        tokens, _ = await accounts.login(EMAIL, DECOMPOSED, IP)
        assert tokens.access_token
    finally:
        hasher.close()
