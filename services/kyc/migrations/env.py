"""Alembic env of the kyc's tables in the shared `vaultpay` database."""

from vaultpay_common.migrations import run_env
from vaultpay_kyc.adapters import tables  # noqa: F401  (registers the tables)
from vaultpay_kyc.adapters.metadata import metadata

run_env(metadata)
