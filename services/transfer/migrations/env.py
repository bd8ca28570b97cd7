"""Alembic env of the transfer's tables in the shared `vaultpay` database."""

from vaultpay_common.migrations import run_env
from vaultpay_transfer.adapters import tables  # noqa: F401  (registers the tables)
from vaultpay_transfer.adapters.isolation import TRANSFER_ISOLATION
from vaultpay_transfer.adapters.metadata import metadata

# What the chain grants transfer's own role: made so at every `migrate` with chain roles.
run_env(metadata, isolation=TRANSFER_ISOLATION)
