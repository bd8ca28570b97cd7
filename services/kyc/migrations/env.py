"""Alembic env of the kyc's tables in the shared `vaultpay` database."""

from vaultpay_common.migrations import run_env
from vaultpay_kyc.adapters import tables  # noqa: F401  (registers the tables)
from vaultpay_kyc.adapters.isolation import KYC_ISOLATION
from vaultpay_kyc.adapters.metadata import metadata

# What the chain grants kyc's own role: made so at every `migrate` with chain roles.
run_env(metadata, isolation=KYC_ISOLATION)
