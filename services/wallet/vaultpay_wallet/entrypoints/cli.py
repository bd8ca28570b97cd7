"""`vaultpay-wallet`: operator commands for the wallet service.

vaultpay-wallet migrate                         # platform + wallet migrations (owner DSN)
vaultpay-wallet verify-audit                    # the vaultpay database's audit chain
vaultpay-wallet dead-letters [--limit N] [--after C]        # wallet's outbox events that stopped
                                                # retrying, oldest N (1-1000, 50) of the total
vaultpay-wallet replay-dead-letter --event-id E # send one again (after fixing the cause)
vaultpay-wallet discard-dead-letter --event-id E --reason R  # give one up for good (audited)
"""

from __future__ import annotations

from pathlib import Path

from vaultpay_common.cli import ServiceCli
from vaultpay_common.migrations import PLATFORM_CHAIN, MigrationChain
from vaultpay_wallet.settings import WalletSettings

__all__ = ["WALLET_CHAIN", "main"]

WALLET_CHAIN = MigrationChain(
    "wallet", Path(__file__).resolve().parents[2] / "migrations", "alembic_version_wallet"
)
cli = ServiceCli(
    "vaultpay-wallet",
    WalletSettings,
    chains=[PLATFORM_CHAIN, WALLET_CHAIN],
    description=__doc__,
    outbox_producer="wallet",
)
main = cli.main


if __name__ == "__main__":
    raise SystemExit(main())
