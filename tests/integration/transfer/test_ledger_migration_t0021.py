"""Migration t0021 on real PostgreSQL, with the real ledger adapter and payout worker: a
payout's attempts count its bank calls, not its leases.

* A payout whose lease is lost before the bank call (its lease ran out while worker A was busy
  with its batch and worker B leased it) gains no attempt from A's lease; B's bank call, which
  fails, counts one. t0014's lease counted both leases, and doubled B's.
* Leased and lost again and again, a payout's lease stays the worker's lease, and its first
  failed bank call is attempt 1, a WARNING: t0014's lease doubled each time, up to 64 times,
  and the first failure came as an ERROR "an operator should look at the bank side".
* A payout whose claim for the bank fails on a database error (a statement timeout here) gains
  no attempt.
* Transfer's role may read who owns a wallet (`wallets.user_id`, for the ledger verifier's
  `history_rows_owned_by_wallet_owner`; tests/integration/transfer/test_ledger_verify.py):
  not at t0020.

The last test downgrades to t0020 (the lease counting leases again) and upgrades again.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from tests.fakes.transfer import ScriptedBank
from tests.integration.transfer.conftest import (
    TRANSFER_HEAD,
    LedgerWorld,
    ledger_is_clean,
    run_transfer_cli,
)
from tests.support import eventually
from vaultpay_common.db import create_engine
from vaultpay_transfer.adapters.ledger_pg import PgLedger
from vaultpay_transfer.service_layer.payouts import ALERT_AFTER_ATTEMPTS, PayoutWorker
from vaultpay_transfer.service_layer.ports import (
    ClaimAnswer,
    PayoutClaim,
    PayoutLease,
    PayoutLedger,
    PayoutSettlement,
)

pytestmark = pytest.mark.integration

_LOGGER = "vaultpay_transfer.service_layer.payouts"
_MOMENT = 0.2  # a lease that runs out before anyone reaches the payout, in seconds
_LEASE = 10.0  # the worker's lease that asks the bank, in seconds
_BANK = _LEASE / 2  # shorter than the lease: the claim keeps the lease's end as the lease set it


async def _pending_payout(ledger: LedgerWorld) -> tuple[str, str]:
    """A new payout to an account of its own: its transaction id and its account hash."""
    wallet = await ledger.new_wallet()
    await ledger.fund(wallet, 5_000)
    account_hash = secrets.token_hex(32)
    outcome = await ledger.withdraw(wallet, 1_000, account_hash=account_hash)
    assert outcome.code == "OK" and outcome.transaction is not None, outcome
    return outcome.transaction.transaction_id, account_hash


async def _attempts(ledger: LedgerWorld, transaction_id: str) -> int:
    [row] = await ledger.fetch(
        "SELECT attempts FROM payouts WHERE transaction_id = $1::uuid", transaction_id
    )
    return int(row["attempts"])


async def _lease_left(ledger: LedgerWorld, transaction_id: str) -> timedelta:
    """How long the payout's lease has still to run, by the database's clock."""
    [row] = await ledger.fetch(
        "SELECT available_at - clock_timestamp() AS left FROM payouts"
        " WHERE transaction_id = $1::uuid",
        transaction_id,
    )
    left: timedelta = row["left"]
    return left


async def _lease_runs_out(ledger: LedgerWorld, transaction_id: str) -> None:
    async def due() -> bool:
        return await _lease_left(ledger, transaction_id) <= timedelta()

    await eventually(due, within=20, what="the payout's lease running out")


def _worker(ledger: PayoutLedger, bank: ScriptedBank, lease_seconds: float) -> PayoutWorker:
    return PayoutWorker(
        ledger, bank, batch_size=1000, lease_seconds=lease_seconds, bank_seconds=_BANK
    )


class _AfterLease:
    """A worker's ledger that runs `meanwhile` once its lease has come back, before the worker
    goes on with the batch (as one busy with the rest of its batch, or one whose payout's row
    someone else locks meanwhile); the claim may be another ledger's (`claims`)."""

    def __init__(
        self,
        ledger: PayoutLedger,
        meanwhile: Callable[[], Awaitable[None]],
        claims: PayoutLedger | None = None,
    ) -> None:
        self._ledger, self._meanwhile = ledger, meanwhile
        self._claims = claims or ledger

    async def lease_payouts(self, limit: int, lease_seconds: float) -> list[PayoutLease]:
        leases = await self._ledger.lease_payouts(limit, lease_seconds)
        await self._meanwhile()
        return leases

    async def claim_for_bank(
        self, lease: PayoutLease, hold_seconds: float, bank_seconds: float
    ) -> PayoutClaim:
        return await self._claims.claim_for_bank(lease, hold_seconds, bank_seconds)

    async def settle_payout(self, transaction_id: str) -> PayoutSettlement:
        return await self._ledger.settle_payout(transaction_id)

    async def return_payout(self, transaction_id: str, reason: str) -> PayoutSettlement:
        return await self._ledger.return_payout(transaction_id, reason)


async def test_a_lease_lost_before_the_bank_call_counts_no_attempt_and_a_failed_call_one(
    ledger: LedgerWorld, caplog: pytest.LogCaptureFixture
) -> None:
    """Worker A leases the payout and is slow to reach it; its lease runs out, worker B leases
    it, asks the bank, which fails; then A reaches it: LEASE_LOST. One bank call, one attempt,
    and B's lease was the worker's lease, not twice it."""
    payout, account_hash = await _pending_payout(ledger)
    bank = ScriptedBank(down={account_hash})
    b_left: list[timedelta] = []

    async def b_goes_first() -> None:
        assert await _attempts(ledger, payout) == 0  # A's lease counted none
        await _lease_runs_out(ledger, payout)
        with caplog.at_level(logging.WARNING, logger=_LOGGER):
            assert await _worker(ledger.ledger, bank, _LEASE).run_once() >= 0
        b_left.append(await _lease_left(ledger, payout))

    a = _worker(_AfterLease(ledger.ledger, b_goes_first), bank, _MOMENT)
    assert await a.run_once() >= 0
    assert bank.asked.count(payout) == 1  # B's call; A left it
    assert await _attempts(ledger, payout) == 1
    # B leased it as a payout the bank was never asked about: the worker's lease, not doubled.
    [left] = b_left
    assert timedelta(seconds=_BANK) < left <= timedelta(seconds=_LEASE)
    failed = [r for r in caplog.records if getattr(r, "transaction_id", "") == payout]
    assert [(r.levelno, getattr(r, "attempts", None)) for r in failed] == [(logging.WARNING, 1)]

    # Its next bank call, failing too, is attempt 2, after a lease twice the worker's.
    await _lease_runs_out(ledger, payout)
    await _worker(ledger.ledger, bank, _LEASE).run_once()
    assert bank.asked.count(payout) == 2
    assert await _attempts(ledger, payout) == 2
    assert timedelta(seconds=_LEASE) < await _lease_left(ledger, payout)
    await ledger_is_clean(ledger)


async def test_leases_lost_again_and_again_neither_back_off_nor_bring_the_alert_nearer(
    ledger: LedgerWorld, caplog: pytest.LogCaptureFixture
) -> None:
    """Leased and let run out as many times as the alert's attempts, never asked about: the
    payout still counts no attempt, its lease is the worker's, and its first failed bank call
    is attempt 1, a WARNING."""
    payout, account_hash = await _pending_payout(ledger)
    for _ in range(ALERT_AFTER_ATTEMPTS):
        leased = await ledger.ledger.lease_payouts(1000, _MOMENT)
        assert payout in {lease.transaction_id for lease in leased}
        assert await _lease_left(ledger, payout) <= timedelta(seconds=_MOMENT)
        await _lease_runs_out(ledger, payout)
    assert await _attempts(ledger, payout) == 0

    bank = ScriptedBank(down={account_hash})
    with caplog.at_level(logging.WARNING, logger=_LOGGER):
        await _worker(ledger.ledger, bank, _LEASE).run_once()
    assert bank.asked.count(payout) == 1
    assert await _attempts(ledger, payout) == 1
    assert await _lease_left(ledger, payout) <= timedelta(seconds=_LEASE)
    failed = [r for r in caplog.records if getattr(r, "transaction_id", "") == payout]
    assert [(r.levelno, getattr(r, "attempts", None)) for r in failed] == [(logging.WARNING, 1)]


async def test_a_claim_that_fails_on_a_database_error_counts_no_attempt(
    ledger: LedgerWorld, caplog: pytest.LogCaptureFixture
) -> None:
    """The payout's row is locked by another session between the lease and the claim; the
    claim, on an engine whose statements time out at 100 ms, fails (DeadlineExceededError):
    the bank is not asked, and the payout has no attempt more than before."""
    payout, account_hash = await _pending_payout(ledger)
    short = create_engine(
        ledger.dbs.app_dsn("transfer"), application_name="short", statement_timeout_ms=100
    )
    locker = await ledger.owner()
    locked = locker.transaction()
    try:

        async def lock_the_row() -> None:
            await locked.start()
            await locker.execute(
                "SELECT 1 FROM payouts WHERE transaction_id = $1::uuid FOR UPDATE", payout
            )

        bank = ScriptedBank(down={account_hash})
        worker = _worker(_AfterLease(ledger.ledger, lock_the_row, PgLedger(short)), bank, _LEASE)
        with caplog.at_level(logging.WARNING, logger=_LOGGER):
            await worker.run_once()
    finally:
        await locked.rollback()
        await locker.close()
        await short.dispose()
    assert payout not in bank.asked
    assert await _attempts(ledger, payout) == 0
    said = [r.getMessage() for r in caplog.records if getattr(r, "transaction_id", "") == payout]
    assert said == ["a payout could not be claimed for the bank; it is retried after its lease"]
    # Its lease is the worker's lease: not lengthened by an attempt it never made.
    assert await _lease_left(ledger, payout) <= timedelta(seconds=_LEASE)


async def test_t0020s_lease_counted_a_lost_lease_and_t0021_does_not(ledger: LedgerWorld) -> None:
    """Downgraded to t0020 (t0014's lease and claim, put back by t0021's downgrade), a lease
    counted an attempt and its claim returned no count; upgraded again, the lease counts none
    and the claim counts the bank call. Last in the module: it migrates the module's
    database."""
    payout, _ = await _pending_payout(ledger)
    await ledger.migrate("downgrade", "t0020")
    try:
        [version] = await ledger.fetch("SELECT version_num FROM alembic_version_transfer")
        assert version["version_num"] == "t0020"
        leased = await ledger.fetch(
            "SELECT transaction_id::text AS id, attempts, lease_until"
            " FROM transfer_lease_payouts(1000, $1::double precision)",
            _MOMENT,
        )
        [lost] = [r for r in leased if r["id"] == payout]
        assert lost["attempts"] == 1  # the review's case: a lease counted as an attempt
        [claimed] = await ledger.fetch(
            "SELECT * FROM transfer_claim_payout_for_bank($1::uuid, $2, 0, 1)",
            payout,
            lost["lease_until"],
        )
        assert list(claimed.keys()) == ["answer", "lease_until"]  # no count
        assert claimed["answer"] == "CLEAR"
        assert await _attempts(ledger, payout) == 1
        assert not await _transfer_reads_wallet_owners(ledger)
    finally:
        migrated = await asyncio.to_thread(run_transfer_cli, ledger.env, "migrate")
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    [version] = await ledger.fetch("SELECT version_num FROM alembic_version_transfer")
    assert version["version_num"] == TRANSFER_HEAD
    await _lease_runs_out(ledger, payout)
    [lease] = [
        lease
        for lease in await ledger.ledger.lease_payouts(1000, _LEASE)
        if lease.transaction_id == payout
    ]
    assert await _attempts(ledger, payout) == 1  # the lease counted none
    claim = await ledger.ledger.claim_for_bank(lease, 0, _BANK)
    assert (claim.answer, claim.attempts) == (ClaimAnswer.CLEAR, 2)
    assert await _attempts(ledger, payout) == 2
    assert await _transfer_reads_wallet_owners(ledger)
    await ledger_is_clean(ledger)  # as transfer's role, the owners' check included


async def _transfer_reads_wallet_owners(ledger: LedgerWorld) -> bool:
    [row] = await ledger.fetch(
        "SELECT has_column_privilege($1, 'wallets', 'user_id', 'SELECT') AS held",
        ledger.dbs.app_role("transfer"),
    )
    return bool(row["held"])
