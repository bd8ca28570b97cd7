"""A WALLET_FROZEN the ledger answers tells the freeze that holds the wallet (transfer t0022),
on real PostgreSQL, with the real ledger adapter and movement use cases.

The ledger function refuses a TopUp into a frozen wallet, and a send or withdrawal whose
wallet a freeze committed on after wallet's PIN check (`transfer_state_refusal`), with the
code only. After such a refusal the ledger adapter reads the freeze in force (staff's, a PIN
lockout, the owner's, in that order) into the outcome's details, and the refusal carries
wallet's metadata (`freeze_reason`, `until`) and message. No freeze to tell (FROZEN with no
freeze row), or the read refused: the bare code.

The last test downgrades to t0021 (transfer's role may not read `wallet_freezes`: the bare
refusal and a WARNING, never another error) and upgrades again.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.integration.transfer.conftest import (
    HOME,
    TOP_UP,
    TRANSFER_HEAD,
    WITHDRAW,
    LedgerWorld,
    Wallet,
    footprint,
    key,
    movement_service,
    run_transfer_cli,
    wallet_gate,
)
from vaultpay_common.errors import metadata_time
from vaultpay_transfer.domain.errors import WalletFrozenError
from vaultpay_transfer.domain.model import PaymentMethod
from vaultpay_transfer.domain.outcomes import LedgerOutcome
from vaultpay_transfer.service_layer.commands import AmountInput, SendMoney, TopUp
from vaultpay_wallet.domain.errors import WalletFrozenError as WalletsFrozenError
from vaultpay_wallet.domain.model import FreezeSource

pytestmark = pytest.mark.integration

_LOGGER = "vaultpay_transfer.adapters.ledger_pg"


async def _top_up(ledger: LedgerWorld, wallet: Wallet) -> LedgerOutcome:
    return await ledger.ledger.top_up(
        key(wallet.user_id, TOP_UP),
        wallet.user_id,
        1_000,
        "INR",
        PaymentMethod.UPI,
        f"upi-{uuid.uuid4().hex}",
        "UPI test",
    )


def _staff_end() -> datetime:
    """A staff freeze's end two days from now, to the second."""
    return (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)


async def test_a_top_up_into_a_self_frozen_wallet_tells_the_owners_freeze(
    ledger: LedgerWorld,
) -> None:
    alice = await ledger.new_wallet()
    await ledger.fund(alice, 500)
    await ledger.freeze(alice, FreezeSource.SELF)
    before = await footprint(ledger)
    outcome = await _top_up(ledger, alice)
    assert (outcome.code, outcome.transaction) == ("WALLET_FROZEN", None), outcome
    assert dict(outcome.details) == {"freeze_reason": "FREEZE_REASON_SELF"}
    assert await footprint(ledger) == before  # the refusal, and its read, wrote nothing
    assert await ledger.balance(alice) == 500
    # Through TopUp's use case: wallet's metadata and message, word for word.
    service = movement_service(ledger.ledger, wallet_gate(alice))
    with pytest.raises(WalletFrozenError) as refused:
        await service.top_up(
            TopUp(
                alice.user_id,
                key(alice.user_id, TOP_UP),
                AmountInput("INR", 1_000),
                PaymentMethod.UPI,
                f"upi-{uuid.uuid4().hex}",
            )
        )
    wallets = WalletsFrozenError.held_by("SELF", None)
    assert (refused.value.message, refused.value.metadata) == (wallets.message, wallets.metadata)
    assert refused.value.metadata == {"freeze_reason": "FREEZE_REASON_SELF"}
    assert "unfreeze it" in refused.value.message


async def test_a_top_up_into_a_wallet_staff_froze_until_a_time_tells_staffs_freeze_and_end(
    ledger: LedgerWorld,
) -> None:
    alice = await ledger.new_wallet()
    until = _staff_end()
    await ledger.freeze(alice, FreezeSource.ADMIN, until=until)
    outcome = await _top_up(ledger, alice)
    assert outcome.code == "WALLET_FROZEN", outcome
    assert dict(outcome.details) == {
        "freeze_reason": "FREEZE_REASON_ADMIN",
        "until": metadata_time(until),
    }


async def test_both_freezes_in_force_tell_staffs(ledger: LedgerWorld) -> None:
    """The owner cannot lift staff's: the refusal names it (FREEZE_AUTHORITY), whichever was
    set first."""
    alice = await ledger.new_wallet()
    await ledger.freeze(alice, FreezeSource.SELF)
    await ledger.freeze(alice, FreezeSource.ADMIN)
    outcome = await _top_up(ledger, alice)
    assert (outcome.code, dict(outcome.details)) == (
        "WALLET_FROZEN",
        {"freeze_reason": "FREEZE_REASON_ADMIN"},
    )


async def test_a_top_up_into_a_locked_wallet_tells_the_lockout_and_its_end(
    ledger: LedgerWorld,
) -> None:
    """A PIN lockout alone: the ledger counts it frozen for a TopUp, which has no PIN check to
    answer PIN_LOCKED first; with the owner's own freeze too, the lockout (harder to lift)."""
    locked = await ledger.new_wallet()
    until = _staff_end()
    await ledger.freeze(locked, FreezeSource.PIN_LOCKOUT, until=until)
    told = {"freeze_reason": "FREEZE_REASON_PIN_LOCKOUT", "until": metadata_time(until)}
    outcome = await _top_up(ledger, locked)
    assert (outcome.code, dict(outcome.details)) == ("WALLET_FROZEN", told)
    await ledger.freeze(locked, FreezeSource.SELF)
    outcome = await _top_up(ledger, locked)
    assert (outcome.code, dict(outcome.details)) == ("WALLET_FROZEN", told)


async def test_no_freeze_to_tell_answers_the_bare_refusal(ledger: LedgerWorld) -> None:
    """A FROZEN wallet with no freeze row: WALLET_FROZEN without details."""
    unexplained = await ledger.new_wallet()
    conn = await ledger.owner()
    try:
        await conn.execute(
            "UPDATE wallets SET status = 'FROZEN' WHERE id = $1", unexplained.wallet_id
        )
    finally:
        await conn.close()
    outcome = await _top_up(ledger, unexplained)
    assert (outcome.code, dict(outcome.details)) == ("WALLET_FROZEN", {})


async def test_a_freeze_after_the_pin_check_tells_the_freeze_on_a_send_and_a_withdrawal(
    ledger: LedgerWorld,
) -> None:
    """The race: wallet's PIN check passed (the fake gate knows no freeze), a staff freeze
    committed before the ledger's lock; the held movements' refusal tells it, and frees the
    key."""
    alice, bob = await ledger.new_wallet(), await ledger.new_wallet()
    await ledger.fund(alice, 5_000)
    until = _staff_end()
    await ledger.freeze(alice, FreezeSource.ADMIN, until=until)
    service = movement_service(ledger.ledger, wallet_gate(alice))
    request = key(alice.user_id)
    with pytest.raises(WalletFrozenError) as refused:
        await service.send_money(
            SendMoney(
                alice.user_id,
                request,
                bob.wallet_id,
                AmountInput("INR", 250),
                "",
                "1234",
                HOME,
            )
        )
    wallets = WalletsFrozenError.held_by("ADMIN", until)
    assert (refused.value.message, refused.value.metadata) == (wallets.message, wallets.metadata)
    assert refused.value.metadata == {
        "freeze_reason": "FREEZE_REASON_ADMIN",
        "until": metadata_time(until),
    }
    assert await ledger.key_is_free(request)
    async with ledger.ledger.hold(key(alice.user_id, WITHDRAW)) as held:
        outcome = await held.withdraw(
            alice.user_id, 300, "INR", "HDFC0001234", "····9012", "b" * 64, "Account Holder"
        )
    assert (outcome.code, dict(outcome.details)) == (
        "WALLET_FROZEN",
        {"freeze_reason": "FREEZE_REASON_ADMIN", "until": metadata_time(until)},
    )
    assert await ledger.balance(alice) == 5_000


async def test_t0021_could_not_read_the_freeze_and_t0022_can(
    ledger: LedgerWorld, caplog: pytest.LogCaptureFixture
) -> None:
    """Downgraded to t0021, transfer's role may not read `wallet_freezes`: the refusal stays
    WALLET_FROZEN, bare, and the failed read is a WARNING; upgraded again, the refusal tells
    the freeze. Last in the module: it migrates the module's database."""
    alice = await ledger.new_wallet()
    await ledger.freeze(alice, FreezeSource.SELF)
    await ledger.migrate("downgrade", "t0021")
    try:
        [version] = await ledger.fetch("SELECT version_num FROM alembic_version_transfer")
        assert version["version_num"] == "t0021"
        with caplog.at_level(logging.WARNING, logger=_LOGGER):
            outcome = await _top_up(ledger, alice)
        assert (outcome.code, dict(outcome.details)) == ("WALLET_FROZEN", {})
        warned = [r for r in caplog.records if r.name == _LOGGER]
        assert [r.levelno for r in warned] == [logging.WARNING]
        assert "could not be read" in warned[0].getMessage()
    finally:
        migrated = await asyncio.to_thread(run_transfer_cli, ledger.env, "migrate")
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    [version] = await ledger.fetch("SELECT version_num FROM alembic_version_transfer")
    assert version["version_num"] == TRANSFER_HEAD
    outcome = await _top_up(ledger, alice)
    assert (outcome.code, dict(outcome.details)) == (
        "WALLET_FROZEN",
        {"freeze_reason": "FREEZE_REASON_SELF"},
    )
