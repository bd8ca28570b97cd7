"""Alembic env of the transfer's tables in the shared `vaultpay` database."""

from vaultpay_common.migrations import run_env
from vaultpay_transfer.adapters import tables  # noqa: F401  (registers the tables)
from vaultpay_transfer.adapters.metadata import metadata

run_env(metadata)
