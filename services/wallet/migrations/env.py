"""Alembic env of the wallet's tables in the shared `vaultpay` database."""

from vaultpay_common.migrations import run_env
from vaultpay_wallet.adapters.isolation import WALLET_ISOLATION
from vaultpay_wallet.adapters.metadata import metadata

# What the chain grants wallet's own role: made so at every `migrate` with chain roles.
run_env(metadata, isolation=WALLET_ISOLATION)
