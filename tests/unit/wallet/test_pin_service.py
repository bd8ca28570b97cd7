"""The PIN rules against fakes: set, verify, lockout, idempotent attempts, change, reset."""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta
from typing import Any

import pytest

from tests.support import json_time
from tests.unit.wallet.wallet_world import World, key
from vaultpay_common.context import Role
from vaultpay_common.db import DatabaseUnavailableError
from vaultpay_common.errors import DomainError, ValidationError, metadata_time
from vaultpay_common.idempotency import IdempotencyKey, IdempotencyKeyInUseError
from vaultpay_wallet.domain.errors import (
    InvalidPinError,
    PinAlreadySetError,
    PinChangedError,
    PinCheckInProgressError,
    PinLockedError,
    PinNotSetError,
    PinResetTokenInvalidError,
    WalletClosedError,
    WalletFrozenError,
)
from vaultpay_wallet.domain.model import FreezeSource, WalletStatus
from vaultpay_wallet.domain.pin import PIN_RESET_COOLDOWN
from vaultpay_wallet.service_layer.commands import (
    AdminFreezeWallet,
    AdminUnfreezeWallet,
    ChangePin,
    CloseMyWallet,
    FreezeMyWallet,
    RequestPinReset,
    ResetPin,
    SetPin,
    VerifyPin,
    VerifyTransferPin,
)

GOOD = "2468"
BAD = "1357"


async def _wrong(world: World, k: IdempotencyKey | None = None) -> DomainError:
    with pytest.raises((InvalidPinError, PinLockedError)) as err:
        await world.pins.verify_pin(VerifyPin("alice", BAD, k or key()))
    return err.value


def _pause_bcrypt(world: World) -> tuple[asyncio.Event, asyncio.Event]:
    """Makes PIN checks wait in bcrypt: the first event is set when one gets there, and they
    go on once the second is set (`del world.hasher.verify` stops pausing later ones)."""
    hashing, release = asyncio.Event(), asyncio.Event()
    verify = world.hasher.verify

    async def slow_verify(pin: str, pin_hash: str, *, movement: bool = False) -> bool:
        hashing.set()
        await release.wait()
        return await verify(pin, pin_hash)

    world.hasher.verify = slow_verify  # type: ignore[method-assign]
    return hashing, release


async def test_set_pin_once_then_pin_already_set() -> None:
    world = World()
    await world.open_wallet()
    result = await world.pins.set_pin(SetPin("alice", GOOD, GOOD, key()))
    assert result.pin_updated_at == world.clock.now()
    assert (await world.wallets.get_my_wallet("alice")).wallet.pin_set
    with pytest.raises(PinAlreadySetError):
        await world.pins.set_pin(SetPin("alice", "8642", "8642", key()))


@pytest.mark.parametrize(
    ("pin", "confirmation", "field"),
    [
        ("123", "123", "pin"),
        ("12345", "12345", "pin"),
        ("12a4", "12a4", "pin"),
        ("1234", "1234", "pin"),
        ("0000", "0000", "pin"),
        ("2468", "2469", "pin_confirmation"),
    ],
)
async def test_bad_pins_name_the_field_and_write_nothing(
    pin: str, confirmation: str, field: str
) -> None:
    world = World()
    await world.open_wallet()
    before = world.snapshot()
    with pytest.raises(ValidationError) as err:
        await world.pins.set_pin(SetPin("alice", pin, confirmation, key()))
    assert err.value.violations[0].field == field
    assert pin not in str(err.value)
    assert world.snapshot() == before


async def test_a_wallet_without_pin_answers_pin_not_set() -> None:
    world = World()
    await world.open_wallet()
    with pytest.raises(PinNotSetError):
        await world.pins.verify_pin(VerifyPin("alice", GOOD, key()))


async def test_wrong_pins_count_and_the_third_locks_the_wallet_for_24_hours() -> None:
    world = World()
    wallet = await world.open_wallet_with_pin()
    first = await _wrong(world)
    assert isinstance(first, InvalidPinError)
    assert first.metadata == {"remaining_attempts": "2"}
    second = await _wrong(world)
    assert second.metadata == {"remaining_attempts": "1"}
    third = await _wrong(world)
    assert isinstance(third, PinLockedError)
    stored = world.uow.wallets.wallets[wallet.id]
    assert stored.status is WalletStatus.FROZEN
    lockout = stored.freeze_by(FreezeSource.PIN_LOCKOUT)
    assert lockout is not None and lockout.until == world.clock.now() + timedelta(hours=24)
    # The end as every time of the API reads (`…Z`), in the metadata and the message.
    assert third.metadata == {"until": json_time(lockout.until)}
    assert str(third).endswith(f"until {json_time(lockout.until)}")
    assert [e.action for e in world.uow.audit_entries].count("wallet.pin_locked") == 1
    assert world.uow.outbox.of_topic("notification.create")[-1].payload["kind"] == "SECURITY"
    # the right PIN during a lockout is still refused, and bcrypt is not even run
    checks = world.hasher.verifications
    with pytest.raises(PinLockedError) as during:
        await world.pins.verify_pin(VerifyPin("alice", GOOD, key()))
    assert world.hasher.verifications == checks
    assert during.value.metadata == {"until": json_time(lockout.until)}


async def test_the_lockout_lifts_itself_after_24_hours_with_a_fresh_counter() -> None:
    world = World()
    await world.open_wallet_with_pin()
    for _ in range(3):
        await _wrong(world)
    world.clock.advance(timedelta(hours=24))
    assert (await world.wallets.get_my_wallet("alice")).wallet.status is WalletStatus.ACTIVE
    assert isinstance(await _wrong(world), InvalidPinError)  # counts from zero again
    assert (await world.pins.verify_pin(VerifyPin("alice", GOOD, key()))).wallet_id


async def test_a_success_clears_the_counter() -> None:
    world = World()
    wallet = await world.open_wallet_with_pin()
    await _wrong(world)
    await _wrong(world)
    await world.pins.verify_pin(VerifyPin("alice", GOOD, key()))
    assert world.uow.pins.records[wallet.id].failed_attempts == 0
    assert (await _wrong(world)).metadata == {"remaining_attempts": "2"}


async def test_a_retried_wrong_attempt_counts_once_and_answers_the_same() -> None:
    world = World()
    wallet = await world.open_wallet_with_pin()
    k = key()
    first = await _wrong(world, k)
    again = await _wrong(world, k)
    assert isinstance(again, InvalidPinError) and again.metadata == first.metadata
    assert world.uow.pins.records[wallet.id].failed_attempts == 1


async def test_a_retry_after_a_crash_between_phases_does_not_count_twice() -> None:
    world = World()
    wallet = await world.open_wallet_with_pin()
    k = key()
    world.hasher.verify = _crash  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        await world.pins.verify_pin(VerifyPin("alice", BAD, k))
    assert world.uow.pins.records[wallet.id].failed_attempts == 1  # counted: fails closed
    del world.hasher.verify
    await _wrong(world, k)
    assert world.uow.pins.records[wallet.id].failed_attempts == 1


async def _crash(pin: str, pin_hash: str, *, movement: bool = False) -> bool:
    raise RuntimeError("worker died")


async def test_checks_counted_and_not_settled_answer_in_progress_then_count_as_wrong() -> None:
    world = World()
    wallet = await world.open_wallet_with_pin()
    world.hasher.verify = _crash  # type: ignore[method-assign]
    for _ in range(3):  # three checks cut off between the phases
        with pytest.raises(RuntimeError):
            await world.pins.verify_pin(VerifyPin("alice", GOOD, key()))
    del world.hasher.verify
    checks = world.hasher.verifications
    with pytest.raises(PinCheckInProgressError) as busy:
        await world.pins.verify_pin(VerifyPin("alice", GOOD, key()))
    assert busy.value.kind.name == "ABORTED"  # retryable: nothing is locked
    assert busy.value.reason == "PIN_CHECK_IN_PROGRESS"
    world.clock.advance(timedelta(seconds=31))  # nothing settled them: they were wrong PINs
    with pytest.raises(PinLockedError):
        await world.pins.verify_pin(VerifyPin("alice", GOOD, key()))
    assert world.hasher.verifications == checks  # neither reached bcrypt
    assert world.uow.pins.records[wallet.id].failed_attempts == 3


async def test_a_check_whose_caller_went_away_still_settles() -> None:
    world = World()
    wallet = await world.open_wallet_with_pin()
    await _wrong(world)
    hashing, release = _pause_bcrypt(world)
    call = asyncio.ensure_future(world.pins.verify_pin(VerifyPin("alice", GOOD, key())))
    await hashing.wait()
    call.cancel()  # the caller's deadline, a cancelled RPC
    with pytest.raises(asyncio.CancelledError):
        await call
    assert world.uow.pins.records[wallet.id].failed_attempts == 2  # counted
    release.set()
    for _ in range(100):  # the settlement runs on without its caller
        if world.uow.pins.records[wallet.id].failed_attempts == 0:
            break
        await asyncio.sleep(0)
    assert world.uow.pins.records[wallet.id].failed_attempts == 0  # the right PIN settled


async def test_a_shutdown_waits_for_the_checks_whose_callers_went_away() -> None:
    """Review of 2026-12-05: the server's stop waited for handlers only, and closing the
    hasher then cancelled the checks still settling for callers that had gone: each kept its
    attempt counted, unsettled, in silence. `drain` (a shutdown hook that runs before the
    hasher closes) waits for them, and says how many it could not wait for."""
    world = World()
    wallet = await world.open_wallet_with_pin()
    hashing, release = _pause_bcrypt(world)
    call = asyncio.ensure_future(world.pins.verify_pin(VerifyPin("alice", GOOD, key())))
    await hashing.wait()
    call.cancel()  # the caller gave up; the check runs on
    with pytest.raises(asyncio.CancelledError):
        await call
    assert world.uow.pins.records[wallet.id].failed_attempts == 1  # counted, not settled

    assert await world.pins.drain(within=0.01) == 1  # bcrypt still holds it: said, not waited
    asyncio.get_running_loop().call_soon(release.set)
    assert await world.pins.drain(within=30.0) == 0  # the time bound only guards a hang
    assert world.uow.pins.records[wallet.id].failed_attempts == 0  # the right PIN settled
    assert await world.pins.drain(within=0.01) == 0  # nothing left to wait for


async def test_a_wrong_pin_answer_does_not_outlive_a_change_of_the_pin() -> None:
    """Review of 2026-12-05: a refusal replayed for ever: the same request sent again with
    the PIN just changed (or reset) to what it carried answered INVALID_PIN, and a lockout's
    PIN_LOCKED outlived the reset that lifted it. A refusal names the PIN it was judged
    against, as an OK does: after a change, its retry is told PIN_CHANGED (send it anew)."""
    world = World()
    await world.open_wallet_with_pin()
    check = key("service:transfer")
    with pytest.raises(InvalidPinError):
        await world.pins.verify_transfer_pin(VerifyTransferPin("alice", BAD, check))
    with pytest.raises(InvalidPinError):  # the same PIN: the stored answer, not counted again
        await world.pins.verify_transfer_pin(VerifyTransferPin("alice", BAD, check))
    world.clock.advance(timedelta(minutes=1))
    await world.pins.change_pin(ChangePin("alice", GOOD, BAD, BAD, key()))
    with pytest.raises(PinChangedError):
        await world.pins.verify_transfer_pin(VerifyTransferPin("alice", BAD, check))
    await world.pins.verify_transfer_pin(  # a new request with the new PIN passes
        VerifyTransferPin("alice", BAD, key("service:transfer"))
    )


async def test_transfer_and_user_checks_share_one_counter() -> None:
    world = World()
    await world.open_wallet_with_pin()
    await _wrong(world)
    with pytest.raises(InvalidPinError) as err:
        await world.pins.verify_transfer_pin(
            VerifyTransferPin("alice", BAD, key("service:transfer"))
        )
    assert err.value.metadata == {"remaining_attempts": "1"}
    with pytest.raises(ValidationError) as missing:
        await world.pins.verify_transfer_pin(VerifyTransferPin("alice", GOOD, None))
    assert missing.value.violations[0].field == "request_id"


@pytest.mark.parametrize("freeze", ["admin", "self"])
async def test_a_movements_check_refuses_a_frozen_wallet_before_counting_an_attempt(
    freeze: str,
) -> None:
    # QA of 2026-12-03: a wrong PIN on an admin-frozen wallet answered INVALID_PIN and
    # counted toward the lockout; only the right PIN then revealed WALLET_FROZEN.
    world = World()
    wallet = await world.open_wallet_with_pin()
    if freeze == "admin":
        await world.admin.freeze_wallet(
            AdminFreezeWallet("staff", Role.ADMIN, wallet.id, "r", None, key("s"))
        )
    else:
        await world.wallets.freeze_my_wallet(FreezeMyWallet("alice", "lost my phone", key()))
    for pin in (BAD, BAD, BAD, GOOD):
        with pytest.raises(WalletFrozenError) as frozen:
            await world.pins.verify_transfer_pin(
                VerifyTransferPin("alice", pin, key("service:transfer"))
            )
        # Which freeze holds it, as GetWallet names it: the owner can lift their own.
        assert frozen.value.metadata == {"freeze_reason": f"FREEZE_REASON_{freeze.upper()}"}
    assert world.uow.pins.records[wallet.id].failed_attempts == 0
    stored = world.uow.wallets.wallets[wallet.id]
    assert stored.freeze_by(FreezeSource.PIN_LOCKOUT) is None  # no lockout on top
    # The holder's own check keeps its rule: a wrong PIN counts, frozen or not.
    with pytest.raises(InvalidPinError):
        await world.pins.verify_pin(VerifyPin("alice", BAD, key()))
    assert world.uow.pins.records[wallet.id].failed_attempts == 1


async def test_a_movements_check_of_a_locked_out_wallet_stays_pin_locked() -> None:
    world = World()
    await world.open_wallet_with_pin()
    for _ in range(3):
        await _wrong(world)
    with pytest.raises(PinLockedError):
        await world.pins.verify_transfer_pin(
            VerifyTransferPin("alice", GOOD, key("service:transfer"))
        )


async def test_a_movements_check_passes_once_a_timed_freeze_has_lapsed() -> None:
    world = World()
    wallet = await world.open_wallet_with_pin()
    until = world.clock.now() + timedelta(hours=1)
    await world.admin.freeze_wallet(
        AdminFreezeWallet("staff", Role.ADMIN, wallet.id, "r", until, key("s"))
    )
    with pytest.raises(WalletFrozenError) as frozen:
        await world.pins.verify_transfer_pin(VerifyTransferPin("alice", BAD, key("t")))
    assert frozen.value.metadata == {
        "freeze_reason": "FREEZE_REASON_ADMIN",
        "until": metadata_time(until),
    }
    assert "only staff can lift" in frozen.value.message
    world.clock.advance(timedelta(hours=2))
    with pytest.raises(InvalidPinError) as wrong:
        await world.pins.verify_transfer_pin(VerifyTransferPin("alice", BAD, key("t")))
    assert wrong.value.metadata == {"remaining_attempts": "2"}


async def test_a_movements_check_refuses_a_closed_wallet_before_counting_an_attempt() -> None:
    world = World()
    wallet = await world.open_wallet_with_pin()
    await world.wallets.close_my_wallet(CloseMyWallet("alice", key()))
    for pin in (BAD, GOOD):
        with pytest.raises(WalletClosedError):
            await world.pins.verify_transfer_pin(
                VerifyTransferPin("alice", pin, key("service:transfer"))
            )
    assert world.uow.pins.records[wallet.id].failed_attempts == 0


async def test_a_passed_check_is_replayed_only_while_its_pin_is_the_pin() -> None:
    # Review of 2026-12-03: a movement's check that passed, for a send the ledger then
    # refused, answered OK again under its id after the owner had changed a leaked PIN.
    world = World()
    await world.open_wallet_with_pin()
    check = key("service:transfer")
    passed = await world.pins.verify_transfer_pin(VerifyTransferPin("alice", GOOD, check))
    again = await world.pins.verify_transfer_pin(VerifyTransferPin("alice", GOOD, check))
    assert again == passed  # a retry while the PIN stands: replayed, not counted
    world.clock.advance(timedelta(minutes=1))
    await world.pins.change_pin(ChangePin("alice", GOOD, "8642", "8642", key()))
    with pytest.raises(PinChangedError):
        await world.pins.verify_transfer_pin(VerifyTransferPin("alice", GOOD, check))
    # A wrong PIN's stored answer and a fresh check are unaffected.
    fresh = await world.pins.verify_transfer_pin(
        VerifyTransferPin("alice", "8642", key("service:transfer"))
    )
    assert fresh.wallet_id == passed.wallet_id


async def test_a_check_whose_pin_changes_while_it_runs_answers_pin_changed_for_good() -> None:
    # It answered ABORTED ("retry"), and every retry with its request_id did the same: the
    # retry reuses the reservation counted against the old PIN.
    world = World()
    await world.open_wallet_with_pin()
    check = key("service:transfer")
    hashing, release = _pause_bcrypt(world)
    running = asyncio.ensure_future(
        world.pins.verify_transfer_pin(VerifyTransferPin("alice", GOOD, check))
    )
    await hashing.wait()
    del world.hasher.verify
    world.clock.advance(timedelta(minutes=1))
    await world.pins.change_pin(ChangePin("alice", GOOD, "8642", "8642", key()))
    release.set()
    with pytest.raises(PinChangedError) as changed:
        await running
    assert changed.value.kind.name == "FAILED_PRECONDITION"
    checks = world.hasher.verifications
    for pin in (GOOD, "8642"):  # a retry is refused the same, before bcrypt
        with pytest.raises(PinChangedError):
            await world.pins.verify_transfer_pin(VerifyTransferPin("alice", pin, check))
    assert world.hasher.verifications == checks
    await world.pins.verify_transfer_pin(
        VerifyTransferPin("alice", "8642", key("service:transfer"))
    )


async def test_a_malformed_pin_to_check_is_bad_input_not_an_attempt() -> None:
    world = World()
    wallet = await world.open_wallet_with_pin()
    with pytest.raises(ValidationError):
        await world.pins.verify_pin(VerifyPin("alice", "12", key()))
    assert world.uow.pins.records[wallet.id].failed_attempts == 0


async def test_staff_unfreeze_lifts_a_lockout_and_clears_the_counter() -> None:
    world = World()
    wallet = await world.open_wallet_with_pin()
    for _ in range(3):
        await _wrong(world)
    await world.admin.unfreeze_wallet(
        AdminUnfreezeWallet("staff", Role.ADMIN, wallet.id, "verified", key("s"))
    )
    assert world.uow.pins.records[wallet.id].failed_attempts == 0
    await world.pins.verify_pin(VerifyPin("alice", GOOD, key()))


async def test_change_pin_checks_the_current_pin_under_the_lockout_rule() -> None:
    world = World()
    wallet = await world.open_wallet_with_pin()
    with pytest.raises(InvalidPinError):
        await world.pins.change_pin(ChangePin("alice", BAD, "8642", "8642", key()))
    with pytest.raises(ValidationError) as same:
        await world.pins.change_pin(ChangePin("alice", GOOD, GOOD, GOOD, key()))
    assert same.value.violations[0].field == "new_pin"
    changed = await world.pins.change_pin(ChangePin("alice", GOOD, "8642", "8642", key()))
    assert changed.pin_updated_at == world.clock.now()
    assert world.uow.pins.records[wallet.id].failed_attempts == 0
    await world.pins.verify_pin(VerifyPin("alice", "8642", key()))
    assert "wallet.pin_changed" in [e.action for e in world.uow.audit_entries]


async def test_pin_reset_mails_a_sealed_single_use_token_that_lifts_only_the_lockout() -> None:
    world = World()
    wallet = await world.open_wallet_with_pin()
    await world.admin.freeze_wallet(
        AdminFreezeWallet("staff", Role.ADMIN, wallet.id, "hold", None, key("s"))
    )
    for _ in range(3):
        await _wrong(world)
    requested = await world.pins.request_pin_reset(RequestPinReset("alice", key()))
    assert requested.token_expires_at == world.clock.now() + timedelta(minutes=15)
    (mail,) = world.uow.outbox.of_topic("mail.send")
    token = world.sealer.open(mail.payload["params"]["token_sealed"])
    stored = next(iter(world.uow.reset_tokens.tokens))
    assert stored == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(mail.payload)
    assert all(token not in repr(e) for e in world.uow.audit_entries)

    reset = await world.pins.reset_pin(ResetPin(token, "8642", "8642", key("anon")))
    assert reset.lockout_lifted
    after = world.uow.wallets.wallets[wallet.id]
    assert after.freeze_by(FreezeSource.PIN_LOCKOUT) is None
    assert after.freeze_by(FreezeSource.ADMIN) is not None  # a staff freeze stays
    assert world.uow.pins.records[wallet.id].failed_attempts == 0
    with pytest.raises(PinResetTokenInvalidError):
        await world.pins.reset_pin(ResetPin(token, "9753", "9753", key("anon")))


async def test_a_new_reset_request_invalidates_the_earlier_token_and_tokens_expire() -> None:
    world = World()
    await world.open_wallet_with_pin()
    await world.pins.request_pin_reset(RequestPinReset("alice", key()))
    # Sooner, the second answers the first's code (tests/unit/wallet/test_pin_reset_requests.py).
    world.clock.advance(PIN_RESET_COOLDOWN)
    await world.pins.request_pin_reset(RequestPinReset("alice", key()))
    first, second = (
        world.sealer.open(m.payload["params"]["token_sealed"])
        for m in world.uow.outbox.of_topic("mail.send")
    )
    with pytest.raises(PinResetTokenInvalidError):
        await world.pins.reset_pin(ResetPin(first, "8642", "8642", key("anon")))
    world.clock.advance(timedelta(minutes=15))
    with pytest.raises(PinResetTokenInvalidError):
        await world.pins.reset_pin(ResetPin(second, "8642", "8642", key("anon")))
    with pytest.raises(ValidationError) as empty:
        await world.pins.reset_pin(ResetPin("", "8642", "8642", key("anon")))
    assert empty.value.violations[0].field == "token"


async def test_changing_the_pin_revokes_a_reset_token_mailed_before_the_change() -> None:
    """An owner who changes a PIN they think leaked must not have it undone by the reset
    link already in a mailbox that may have leaked too."""
    world = World()
    wallet = await world.open_wallet_with_pin()
    await world.pins.request_pin_reset(RequestPinReset("alice", key()))
    (mail,) = world.uow.outbox.of_topic("mail.send")
    token = world.sealer.open(mail.payload["params"]["token_sealed"])
    changed = await world.pins.change_pin(ChangePin("alice", GOOD, "8642", "8642", key()))
    assert all(t.used_at == changed.pin_updated_at for t in world.uow.reset_tokens.tokens.values())
    (audited,) = [e for e in world.uow.audit_entries if e.action == "wallet.pin_changed"]
    assert audited.details == {"reset_tokens_revoked": "1"}
    before = world.snapshot()
    with pytest.raises(PinResetTokenInvalidError):
        await world.pins.reset_pin(ResetPin(token, "9753", "9753", key("anon")))
    assert world.snapshot() == before
    await world.pins.verify_pin(VerifyPin("alice", "8642", key()))
    assert world.uow.pins.records[wallet.id].updated_at == changed.pin_updated_at


async def test_a_refused_pin_change_leaves_the_reset_token_usable() -> None:
    """Only a change that happens revokes: a wrong current PIN (perhaps the very reason the
    owner asked for a reset) leaves the mailed token working."""
    world = World()
    await world.open_wallet_with_pin()
    await world.pins.request_pin_reset(RequestPinReset("alice", key()))
    (mail,) = world.uow.outbox.of_topic("mail.send")
    token = world.sealer.open(mail.payload["params"]["token_sealed"])
    with pytest.raises(InvalidPinError):
        await world.pins.change_pin(ChangePin("alice", BAD, "8642", "8642", key()))
    await world.pins.reset_pin(ResetPin(token, "9753", "9753", key("anon")))
    await world.pins.verify_pin(VerifyPin("alice", "9753", key()))


async def test_a_retried_pin_reset_request_sends_one_mail() -> None:
    world = World()
    await world.open_wallet_with_pin()
    k = key()
    first = await world.pins.request_pin_reset(RequestPinReset("alice", k))
    again = await world.pins.request_pin_reset(RequestPinReset("alice", k))
    assert first == again
    assert len(world.uow.outbox.of_topic("mail.send")) == 1


async def test_a_movement_refused_for_staffs_and_the_owners_freezes_names_staffs() -> None:
    world = World()
    wallet = await world.open_wallet_with_pin()
    await world.wallets.freeze_my_wallet(FreezeMyWallet("alice", "lost my phone", key()))
    await world.admin.freeze_wallet(
        AdminFreezeWallet("staff", Role.ADMIN, wallet.id, "r", None, key("s"))
    )
    with pytest.raises(WalletFrozenError) as frozen:
        await world.pins.verify_transfer_pin(VerifyTransferPin("alice", GOOD, key("t")))
    # The one the owner cannot lift; no end, so no `until`.
    assert frozen.value.metadata == {"freeze_reason": "FREEZE_REASON_ADMIN"}


async def test_a_settlement_the_key_is_held_against_a_moment_is_tried_again_and_locks() -> None:
    """Another replica's call of the same check can hold its key for a moment (its look for
    the stored answer) just as this one settles. Review of 2026-12-04 (third): the settlement
    was not tried again, so a third wrong PIN answered IDEMPOTENCY_KEY_IN_USE with its attempt
    counted and no lockout written (no freeze, no audit row, no mail)."""
    world = World()
    wallet = await world.open_wallet_with_pin()
    await _wrong(world)
    await _wrong(world)
    records = world.uow.idempotency
    claim = records.claim
    third = key()
    claims_of_third: list[IdempotencyKey] = []

    async def held_at_settlement(asked: IdempotencyKey) -> bytes | None:
        if asked == third:
            claims_of_third.append(asked)
            if len(claims_of_third) == 2:  # the first look is this call's own stored-answer
                raise IdempotencyKeyInUseError()
        return await claim(asked)

    records.claim = held_at_settlement  # type: ignore[assignment]
    locked = await _wrong(world, third)
    assert isinstance(locked, PinLockedError)
    assert len(claims_of_third) == 3  # its look, the refused settlement, the one that settled
    assert world.uow.wallets.wallets[wallet.id].freeze_by(FreezeSource.PIN_LOCKOUT) is not None
    assert [e.action for e in world.uow.audit_entries].count("wallet.pin_locked") == 1


async def test_a_keyless_change_whose_commit_reply_was_lost_answers_ok() -> None:
    """ChangePin without a request_id: the settlement's COMMIT happened but its reply was
    lost (a dropped connection), so the settlement runs again with nothing stored to replay.
    It found the PIN changed (by itself) and answered PIN_CHANGED: the owner read "failed"
    while the new PIN was in force (wallet review, 2026-12-04 night)."""
    world = World()
    wallet = await world.open_wallet_with_pin()
    world.clock.advance(timedelta(minutes=1))
    commit, lost = world.uow.commit, list[bool]()

    async def commits_then_loses_the_reply() -> None:
        await commit()
        if world.uow.pins.records[wallet.id].pin_hash == "h:8642" and not lost:
            lost.append(True)
            raise DatabaseUnavailableError()

    world.uow.commit = commits_then_loses_the_reply  # type: ignore[method-assign]
    await world.pins.change_pin(ChangePin("alice", GOOD, "8642", "8642", None))
    assert lost == [True]
    assert world.uow.pins.records[wallet.id].pin_hash == "h:8642"
    # The retried settlement wrote nothing more: one audit row, one notification.
    assert [e.action for e in world.uow.audit_entries].count("wallet.pin_changed") == 1
    told = [m.payload["title"] for m in world.uow.outbox.messages]
    assert told.count("Your PIN was changed") == 1


@pytest.mark.parametrize("step", ["set", "reset"])
async def test_a_retry_whose_first_attempt_commits_after_its_look_gets_the_answer(
    step: str,
) -> None:
    """Review of 2026-12-05: the cheap check before bcrypt ran after the look for a stored
    reply, in a transaction of its own; a first attempt that committed between the two (the
    retry sent as it waited for bcrypt) made the retry's check refuse, PIN_ALREADY_SET or
    PIN_RESET_TOKEN_INVALID, for a request that took effect."""
    world = World()
    if step == "set":
        await world.open_wallet()
        k = key()

        def call() -> Any:
            return world.pins.set_pin(SetPin("alice", GOOD, GOOD, k))
    else:
        await world.open_wallet_with_pin()
        await world.pins.request_pin_reset(RequestPinReset("alice", key()))
        (mail,) = world.uow.outbox.of_topic("mail.send")
        token = world.sealer.open(mail.payload["params"]["token_sealed"])
        k = key("anon")

        def call() -> Any:
            return world.pins.reset_pin(ResetPin(token, "8642", "8642", k))

    hashing, release = asyncio.Event(), asyncio.Event()
    hash_pin = world.hasher.hash

    async def slow_hash(pin: str, *, movement: bool = False, refusable: bool = False) -> str:
        hashing.set()
        await release.wait()
        return await hash_pin(pin, refusable=refusable)

    world.hasher.hash = slow_hash  # type: ignore[method-assign]
    first = asyncio.ensure_future(call())
    await asyncio.wait_for(hashing.wait(), 5)  # past its check, in bcrypt
    look = world.pins._stored

    async def look_then_the_first_commits(*args: Any) -> Any:
        found = await look(*args)
        if not first.done():  # the window: between the retry's look and its check
            release.set()
            await first
        return found

    world.pins._stored = look_then_the_first_commits  # type: ignore[method-assign,assignment]
    retried = await call()
    assert retried == await first
