"""Alembic env of the auth database (run by `vaultpay-auth migrate`)."""

from vaultpay_auth.adapters.tables import metadata
from vaultpay_common.migrations import run_env

run_env(metadata)
