"""The close guard's trigger function is no probe of the ledger (transfer t0025), on real
PostgreSQL with the wallet and transfer chains at their heads.

`transfer_refuse_close_with_pending_withdrawal()` runs as the owner (SECURITY DEFINER, t0007)
and reads `wallet_transactions`. With PUBLIC's default EXECUTE, any service's role could
attach it to a TEMP table of its own, insert a wallet id and learn from the refusal whether
that wallet has a withdrawal being paid out. Nobody but the owner may EXECUTE it now, while
t0003's trigger on `wallets` (which fires without EXECUTE) still refuses wallet's role's close
of a wallet whose withdrawal is pending.
"""

from __future__ import annotations

import asyncpg
import pytest

from tests.fakes.wallet import FakeUsage
from tests.integration.transfer.conftest import LedgerWorld, Wallet, key, plain_dsn
from vaultpay_common.clock import SystemClock
from vaultpay_wallet.adapters.unit_of_work import SqlWalletUnitOfWork
from vaultpay_wallet.domain.errors import WalletHasPendingWithdrawalError
from vaultpay_wallet.service_layer.commands import CloseMyWallet
from vaultpay_wallet.service_layer.limits import LimitsService
from vaultpay_wallet.service_layer.wallets import WalletService

pytestmark = pytest.mark.integration

GUARD = "transfer_refuse_close_with_pending_withdrawal"
CLOSE = "/vaultpay.wallet.v1.WalletService/CloseMyWallet"
_PROBE = (
    "CREATE TEMP TABLE probe (id text)",
    f"CREATE TRIGGER probe BEFORE INSERT ON probe FOR EACH ROW EXECUTE FUNCTION public.{GUARD}()",
)


async def _pending_withdrawal(ledger: LedgerWorld) -> Wallet:
    wallet = await ledger.new_wallet()
    await ledger.fund(wallet, 4_000)
    outcome = await ledger.withdraw(wallet, 4_000)
    assert outcome.code == "OK", outcome
    return wallet


@pytest.mark.parametrize("service", ["kyc", "wallet", "transfer"])
async def test_no_services_role_can_attach_the_close_guard_to_a_table_of_its_own(
    ledger: LedgerWorld, service: str
) -> None:
    wallet = await _pending_withdrawal(ledger)
    conn = await asyncpg.connect(plain_dsn(ledger.dbs.app_dsn(service)))
    try:
        await conn.execute(_PROBE[0])  # TEMPORARY on the database: any role may do this much
        try:
            await conn.execute(_PROBE[1])
        except asyncpg.InsufficientPrivilegeError:
            return
        # Before t0025: the trigger is made, and the owner's read of the ledger answers.
        try:
            await conn.execute("INSERT INTO probe VALUES ($1)", wallet.wallet_id)
        except asyncpg.CheckViolationError as exc:
            pytest.fail(f"{service}'s role learned of a pending withdrawal through {GUARD}: {exc}")
        pytest.fail(f"{service}'s role attached {GUARD} to a table of its own")
    finally:
        await conn.close()


async def test_only_the_owner_may_execute_the_close_guard(ledger: LedgerWorld) -> None:
    rows = await ledger.fetch(
        "SELECT a.grantee::regrole::text AS grantee FROM pg_proc AS p,"
        " aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) AS a"
        " WHERE p.oid = $1::regprocedure AND a.privilege_type = 'EXECUTE'",
        f"{GUARD}()",
    )
    assert [r["grantee"] for r in rows] == [ledger.dbs.vaultpay_owner_role]


async def test_the_trigger_still_refuses_wallets_close_while_a_withdrawal_is_pending(
    ledger: LedgerWorld,
) -> None:
    """Wallet's CloseMyWallet, as wallet's role: the trigger fires without EXECUTE."""
    wallet = await _pending_withdrawal(ledger)
    clock = SystemClock()

    def uow() -> SqlWalletUnitOfWork:
        return SqlWalletUnitOfWork(ledger.wallet_engine)

    service = WalletService(uow, clock, LimitsService(uow, clock, FakeUsage()))
    with pytest.raises(WalletHasPendingWithdrawalError):
        await service.close_my_wallet(CloseMyWallet(wallet.user_id, key(wallet.user_id, CLOSE)))
    [row] = await ledger.fetch("SELECT status FROM wallets WHERE id = $1", wallet.wallet_id)
    assert row["status"] == "ACTIVE"
