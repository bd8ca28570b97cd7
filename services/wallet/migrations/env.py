"""Alembic env of the wallet's tables in the shared `vaultpay` database."""

from vaultpay_common.migrations import run_env
from vaultpay_wallet.adapters.metadata import metadata

run_env(metadata)
