"""Alembic env of the platform's tables in the shared `vaultpay` database."""

from sqlalchemy import MetaData

from vaultpay_common.migrations import run_env

run_env(MetaData())
