"""Wallet holder use cases against fakes: open, read, look up, freeze, unfreeze, close."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from tests.unit.wallet.wallet_world import World, key
from vaultpay_common.context import Role
from vaultpay_common.errors import ValidationError, metadata_time
from vaultpay_wallet.domain.errors import (
    InvalidPinError,
    PinLockedError,
    WalletAlreadyExistsError,
    WalletClosedError,
    WalletFrozenError,
    WalletHasBalanceError,
    WalletNotFoundError,
)
from vaultpay_wallet.domain.model import FreezeSource, KycTier, WalletStatus
from vaultpay_wallet.service_layer.commands import (
    AdminFreezeWallet,
    AdminUnfreezeWallet,
    CloseMyWallet,
    CreateWallet,
    FreezeMyWallet,
    UnfreezeMyWallet,
    VerifyPin,
)
from vaultpay_wallet.service_layer.limits import LimitsService
from vaultpay_wallet.service_layer.wallets import WalletService


async def test_create_wallet_opens_an_active_inr_wallet_at_tier_none() -> None:
    world = World()
    wallet = await world.open_wallet()
    assert wallet.id.startswith("VPY-")
    assert (wallet.status, wallet.currency, wallet.balance_minor) == (WalletStatus.ACTIVE, "INR", 0)
    assert wallet.kyc_tier is KycTier.NONE
    assert not wallet.pin_set
    assert [e.action for e in world.uow.audit_entries] == ["wallet.created"]


async def test_a_second_wallet_is_refused_even_after_closing() -> None:
    world = World()
    await world.open_wallet()
    with pytest.raises(WalletAlreadyExistsError):
        await world.open_wallet()
    await world.wallets.close_my_wallet(CloseMyWallet("alice", key()))
    with pytest.raises(WalletAlreadyExistsError, match="closed"):
        await world.open_wallet()


async def test_a_retried_create_replays_the_first_wallet() -> None:
    world = World()
    k = key()
    first = await world.wallets.create_wallet(CreateWallet("alice", "Alice", "", k))
    again = await world.wallets.create_wallet(CreateWallet("alice", "Alice", "", k))
    assert again == first
    assert len(world.uow.wallets.wallets) == 1


async def test_a_colliding_wallet_id_is_drawn_again() -> None:
    world = World()
    ids = iter(["VPY-AAAAAA", "VPY-AAAAAA", "VPY-BBBBBB"])
    wallets = WalletService(lambda: world.uow, world.clock, world.limits, new_id=lambda: next(ids))
    await wallets.create_wallet(CreateWallet("u1", "One", "", None))
    second = await wallets.create_wallet(CreateWallet("u2", "Two", "", None))
    assert second.id == "VPY-BBBBBB"


async def test_only_a_supported_currency_opens_a_wallet_inr_alone_by_default() -> None:
    world = World()
    before = world.snapshot()
    with pytest.raises(ValidationError) as err:
        await world.wallets.create_wallet(CreateWallet("alice", "Alice", "USD", key()))
    assert err.value.reason == "INVALID_ARGUMENT"
    (violation,) = err.value.violations
    assert violation.field == "currency_code"
    assert violation.description == "USD is not supported here (supported: INR)"
    assert world.snapshot() == before
    wallet = await world.wallets.create_wallet(CreateWallet("alice", "Alice", "INR", key()))
    assert wallet.currency == "INR"


async def test_a_configured_extra_currency_opens_a_wallet_in_it() -> None:
    world = World()
    wallets = WalletService(
        lambda: world.uow, world.clock, world.limits, currencies=frozenset({"INR", "USD"})
    )
    usd = await wallets.create_wallet(CreateWallet("alice", "Alice", "USD", key()))
    assert (usd.currency, (await wallets.get_balance("alice")).currency) == ("USD", "USD")
    inr = await wallets.create_wallet(CreateWallet("bob", "Bob", "", key("bob")))
    assert inr.currency == "INR"
    with pytest.raises(ValidationError, match=r"supported: INR, USD"):
        await wallets.create_wallet(CreateWallet("carol", "Carol", "EUR", key("carol")))


@pytest.mark.parametrize(
    ("display_name", "currency", "field"),
    [
        ("", "", "display_name"),
        ("x" * 101, "", "display_name"),
        ("Al\x00", "", "display_name"),
        ("\u202eecilA", "", "display_name"),  # a bidi override: renders as "Alice"
        ("Al\u200bice\u2066", "", "display_name"),  # zero-width space, bidi isolate
        ("Al\x85ice", "", "display_name"),  # a C1 control
        ("Alice\ue000", "", "display_name"),  # private use
        ("Alice\u0378", "", "display_name"),  # unassigned
        ("Alice", "ABC", "currency_code"),
        ("Alice", "inr", "currency_code"),
    ],
)
async def test_bad_input_names_the_field_and_writes_nothing(
    display_name: str, currency: str, field: str
) -> None:
    world = World()
    before = world.snapshot()
    with pytest.raises(ValidationError) as err:
        await world.wallets.create_wallet(CreateWallet("alice", display_name, currency, key()))
    assert err.value.violations[0].field == field
    assert world.snapshot() == before


async def test_a_display_name_with_a_joiner_after_a_virama_is_accepted() -> None:
    # Indic names need ZWJ/ZWNJ after a virama (RFC 5892 CONTEXTJ); "Al\u200dice" stays refused.
    world = World()
    name = "സിന്\u200d क्\u200dष"  # Malayalam, Devanagari
    wallet = await world.wallets.create_wallet(CreateWallet("alice", name, "", key()))
    assert (await world.wallets.lookup_wallet(wallet.id)).display_name == name
    with pytest.raises(ValidationError):
        await world.wallets.create_wallet(CreateWallet("bob", "Al\u200dice", "", key("bob")))


@pytest.mark.parametrize("separator", ["\u2028", "\u2029"])
async def test_a_display_name_is_one_line(separator: str) -> None:
    """Review of 2026-12-05: LINE and PARAGRAPH SEPARATOR (Zl, Zp) passed, and a payee's
    notification quotes the payer's name: "Ravi<PS>VaultPay Security: call …" put a line of
    its own, outside the quotes, under ours."""
    world = World()
    name = f"Ravi{separator}VaultPay Security: call +91 80000 00000"
    with pytest.raises(ValidationError) as refused:
        await world.wallets.create_wallet(CreateWallet("alice", name, "", key()))
    assert [(v.field, v.description) for v in refused.value.violations] == [
        ("display_name", "must be one line")
    ]


def _as_before_one_line_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """The text checks as a build before one-line text had them (no Zl, Zp refusal)."""
    for module in ("wallets", "admin"):
        monkeypatch.setattr(
            f"vaultpay_wallet.service_layer.{module}.clean_text",
            lambda value, **_: value.strip(),
        )


async def test_a_retry_of_a_change_that_committed_under_older_rules_gets_its_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Review of 2026-12-05: the input checks ran before the stored answer was looked for, so a
    retry of a CreateWallet, a self-freeze or a staff freeze that committed with a text the
    one-line rule now refuses (on a replica of the older build, its reply lost) was told 400
    for a change in force."""
    world = World()
    text = "Ravi\u2029Rao"
    create = CreateWallet("alice", text, "", key())
    freeze = FreezeMyWallet("alice", text, key())
    with monkeypatch.context() as older:
        _as_before_one_line_text(older)
        created = await world.wallets.create_wallet(create)
        frozen = await world.wallets.freeze_my_wallet(freeze)
        staff = AdminFreezeWallet("staff", Role.ADMIN, created.id, text, None, key("staff"))
        held = await world.admin.freeze_wallet(staff)
    assert await world.wallets.create_wallet(create) == created
    assert await world.wallets.freeze_my_wallet(freeze) == frozen
    assert await world.admin.freeze_wallet(staff) == held
    with pytest.raises(ValidationError):  # a new request with such a text: refused
        await world.wallets.freeze_my_wallet(FreezeMyWallet("alice", text, key()))


async def test_another_users_wallet_is_not_found_and_lookup_shows_only_public_fields() -> None:
    world = World()
    wallet = await world.open_wallet("alice")
    with pytest.raises(WalletNotFoundError):
        await world.wallets.get_my_wallet("bob")
    view = await world.wallets.lookup_wallet(wallet.id.lower())
    assert (view.wallet_id, view.display_name, view.can_receive) == (wallet.id, "Alice A", True)
    assert not hasattr(view, "balance_minor") and not hasattr(view, "user_id")
    with pytest.raises(WalletNotFoundError):
        await world.wallets.lookup_wallet("VPY-ZZZZZZ")
    with pytest.raises(ValidationError):
        await world.wallets.lookup_wallet("not-an-id")


async def test_get_my_wallet_shows_limits_even_when_usage_is_unknown() -> None:
    world = World()
    await world.open_wallet()
    world.usage.broken = True
    result = await world.wallets.get_my_wallet("alice")
    assert not result.usage_known
    assert len(result.limits) == 3
    assert result.limits[0].daily.used_minor is None


async def test_the_owner_lifts_only_their_own_freeze() -> None:
    world = World()
    wallet = await world.open_wallet()
    await world.wallets.freeze_my_wallet(FreezeMyWallet("alice", "lost phone", key()))
    await world.admin.freeze_wallet(
        AdminFreezeWallet("staff", Role.ADMIN, wallet.id, "fraud check", None, key("staff"))
    )
    before = world.snapshot()
    # QA of 2026-12-03: this answered OK with the wallet still FROZEN (the self-freeze
    # lifted); it is refused and changes nothing, as without the self-freeze.
    with pytest.raises(WalletFrozenError) as err:
        await world.wallets.unfreeze_my_wallet(UnfreezeMyWallet("alice", key()))
    assert "staff" in err.value.message
    assert world.snapshot() == before
    stored = world.uow.wallets.wallets[wallet.id]
    assert {f.source for f in stored.freezes} == {FreezeSource.ADMIN, FreezeSource.SELF}
    lifted = await world.admin.unfreeze_wallet(
        AdminUnfreezeWallet("staff", Role.ADMIN, wallet.id, "ok", key("staff"))
    )
    assert lifted.status is WalletStatus.ACTIVE


async def test_close_needs_zero_balance_and_a_staff_freeze_blocks_it() -> None:
    world = World()
    wallet = await world.open_wallet()
    world.uow.wallets.set_balance(wallet.id, 100)
    with pytest.raises(WalletHasBalanceError):
        await world.wallets.close_my_wallet(CloseMyWallet("alice", key()))
    world.uow.wallets.set_balance(wallet.id, 0)
    await world.admin.freeze_wallet(
        AdminFreezeWallet("staff", Role.ADMIN, wallet.id, "hold", None, key("staff"))
    )
    with pytest.raises(WalletFrozenError) as refused:
        await world.wallets.close_my_wallet(CloseMyWallet("alice", key()))
    # Which hold (review of 2026-12-05: no metadata, so a client could not say why or until when)
    assert refused.value.metadata == {"freeze_reason": "FREEZE_REASON_ADMIN"}
    await world.admin.unfreeze_wallet(
        AdminUnfreezeWallet("staff", Role.ADMIN, wallet.id, "cleared", key("staff"))
    )
    await world.wallets.freeze_my_wallet(FreezeMyWallet("alice", "", key()))
    closed = await world.wallets.close_my_wallet(CloseMyWallet("alice", key()))
    assert closed.status is WalletStatus.CLOSED and closed.freezes == ()
    assert world.uow.outbox.topics()[-1] == "notification.create"
    with pytest.raises(WalletClosedError):
        await world.wallets.freeze_my_wallet(FreezeMyWallet("alice", "", key()))
    assert (await world.wallets.lookup_wallet(wallet.id)).can_receive is False


async def test_an_expired_staff_freeze_reads_as_lifted_and_the_sweep_persists_it() -> None:
    world = World()
    wallet = await world.open_wallet()
    until = world.clock.now() + timedelta(hours=2)
    await world.admin.freeze_wallet(
        AdminFreezeWallet("staff", Role.ADMIN, wallet.id, "hold", until, key("staff"))
    )
    world.clock.advance(timedelta(hours=3))
    assert (await world.wallets.get_my_wallet("alice")).wallet.status is WalletStatus.ACTIVE
    assert world.uow.wallets.wallets[wallet.id].status is WalletStatus.FROZEN
    assert await world.sweeper.sweep_expired_freezes() == 1
    assert world.uow.wallets.wallets[wallet.id].status is WalletStatus.ACTIVE
    assert await world.sweeper.sweep_expired_freezes() == 0


async def test_usage_that_raises_is_treated_as_unknown(caplog: pytest.LogCaptureFixture) -> None:
    world = World()
    await world.open_wallet()
    world.usage.broken = True
    limits = LimitsService(lambda: world.uow, world.clock, world.usage)
    with caplog.at_level("WARNING"):
        result = await limits.get_limits("alice")
    assert result.usage_known is False
    # Why, with its stack (review of 2026-12-05: the class name alone, not actionable).
    [said] = [r for r in caplog.records if r.getMessage() == "limit usage unavailable"]
    assert said.exc_info is not None and "transfer is down" in str(said.exc_info[1])


async def test_a_pin_lockout_under_a_self_freeze_is_refused_and_changes_nothing() -> None:
    world = World()
    wallet = await world.open_wallet_with_pin()
    for _ in range(3):
        with pytest.raises((InvalidPinError, PinLockedError)):
            await world.pins.verify_pin(VerifyPin("alice", "0000", key()))
    await world.wallets.freeze_my_wallet(FreezeMyWallet("alice", "lost phone", key()))
    before = world.snapshot()
    with pytest.raises(WalletFrozenError) as err:
        await world.wallets.unfreeze_my_wallet(UnfreezeMyWallet("alice", key()))
    assert "reset the PIN" in err.value.message
    assert world.snapshot() == before
    stored = world.uow.wallets.wallets[wallet.id]
    assert {f.source for f in stored.freezes} == {FreezeSource.PIN_LOCKOUT, FreezeSource.SELF}


async def test_the_owner_is_told_of_staffs_freeze_over_a_pin_lockout() -> None:
    """Review of 2026-12-04: the refusal named the first non-self freeze in the wallet's
    list, the lockout when it came first, so the owner was told to reset the PIN while
    staff's freeze, which only staff lift, held the wallet anyway."""
    world = World()
    wallet = await world.open_wallet_with_pin()
    for _ in range(3):
        with pytest.raises((InvalidPinError, PinLockedError)):
            await world.pins.verify_pin(VerifyPin("alice", "0000", key()))
    await world.admin.freeze_wallet(
        AdminFreezeWallet("staff", Role.ADMIN, wallet.id, "fraud check", None, key("staff"))
    )
    stored = world.uow.wallets.wallets[wallet.id]
    # The lockout listed first, as PostgreSQL may return it (the freezes are read unordered).
    lockout_first = sorted(stored.freezes, key=lambda f: f.source is not FreezeSource.PIN_LOCKOUT)
    world.uow.wallets.wallets[wallet.id] = replace(stored, freezes=tuple(lockout_first))
    with pytest.raises(WalletFrozenError) as err:
        await world.wallets.unfreeze_my_wallet(UnfreezeMyWallet("alice", key()))
    assert "only staff can lift" in err.value.message


async def test_a_full_counter_without_a_lockout_is_refused_with_its_end() -> None:
    """Review of 2026-12-05: every attempt counted, none settled into a lockout (a check
    that lost its connection after its reservation committed): PIN_LOCKED came with no
    `until`, though the counter starts again a lockout's length after its last attempt."""
    world = World()
    wallet = await world.open_wallet_with_pin()
    pins = world.uow.pins
    last = world.clock.now()
    pins.records[wallet.id] = replace(
        pins.records[wallet.id], failed_attempts=3, last_attempt_at=last
    )
    world.clock.advance(timedelta(minutes=5))  # past the window of checks still running
    with pytest.raises(PinLockedError) as locked:
        await world.pins.verify_pin(VerifyPin("alice", "2468", key()))
    assert locked.value.metadata == {"until": metadata_time(last + timedelta(hours=24))}


async def test_the_sweep_restarts_a_stale_counter_but_not_one_a_check_counted_since() -> None:
    """A counter left at 3 with no lockout (the locking attempt died) restarts a lockout's
    length after its last attempt, audited. Review of 2026-12-04 (third): the sweep reset the
    counter it had found without looking again, so a check that restarted it and counted a
    new attempt in between lost that attempt: a free guess."""
    world = World()
    wallet = await world.open_wallet_with_pin()
    pins = world.uow.pins
    stale_at = world.clock.now()
    pins.records[wallet.id] = replace(
        pins.records[wallet.id], failed_attempts=3, last_attempt_at=stale_at
    )
    world.clock.advance(timedelta(hours=25))
    found = pins.stale_lock_wallet_ids

    async def a_check_counts_meanwhile(before: datetime, limit: int) -> Sequence[str]:
        listed = await found(before, limit)
        record = pins.records[wallet.id]
        pins.records[wallet.id] = replace(
            record, failed_attempts=1, last_attempt_at=world.clock.now()
        )
        return listed

    pins.stale_lock_wallet_ids = a_check_counts_meanwhile  # type: ignore[method-assign]
    assert await world.sweeper.sweep_expired_freezes() == 0  # nothing restarted
    assert pins.records[wallet.id].failed_attempts == 1  # the new attempt kept
    assert [e.action for e in world.uow.audit_entries][-1] != "wallet.pin_attempts_restarted"

    pins.stale_lock_wallet_ids = found  # type: ignore[method-assign]
    pins.records[wallet.id] = replace(
        pins.records[wallet.id], failed_attempts=3, last_attempt_at=world.clock.now()
    )
    assert await world.sweeper.sweep_expired_freezes() == 0  # not stale yet
    world.clock.advance(timedelta(hours=24, seconds=1))
    assert await world.sweeper.sweep_expired_freezes() == 1
    assert pins.records[wallet.id].failed_attempts == 0
    restarted = world.uow.audit_entries[-1]
    assert (restarted.action, restarted.target_id, restarted.actor_id) == (
        "wallet.pin_attempts_restarted",
        wallet.id,
        "system",
    )
