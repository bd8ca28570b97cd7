"""Shared by the wallet's integration tests: its migrations w0001-w0004 alone, in a private
script dir (so later revisions of other engineers do not take part in these tests), the real
chains at their heads, and a fresh idempotency key."""

from __future__ import annotations

import shutil
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from vaultpay_common.idempotency import IdempotencyKey, request_fingerprint
from vaultpay_common.migrations import PLATFORM_CHAIN, MigrationChain, upgrade_all
from vaultpay_devstack.postgres import Provisioned
from vaultpay_wallet.entrypoints.cli import WALLET_CHAIN

__all__ = ["WALLET_MIGRATIONS", "migrate_to_head", "new_key", "private_wallet_chain"]

_VERSIONS = Path(__file__).resolve().parents[3] / "services/wallet/migrations/versions"
WALLET_MIGRATIONS = (
    "0001_wallets.py",
    "0002_ip_trust_notifications.py",
    "0003_pin_check_functions.py",
    "0004_movement_check_function.py",
)
_ENV = """from vaultpay_common.migrations import run_env
from vaultpay_wallet.adapters.metadata import metadata

run_env(metadata)
"""


def private_wallet_chain(scripts: Path) -> MigrationChain:
    """The chain of WALLET_MIGRATIONS copied into `scripts` (an empty directory); not applied."""
    (scripts / "versions").mkdir()
    (scripts / "env.py").write_text(_ENV)
    for name in WALLET_MIGRATIONS:
        shutil.copy(_VERSIONS / name, scripts / "versions" / name)
    return MigrationChain("wallet", scripts, "alembic_version_wallet")


def migrate_to_head(databases: Provisioned) -> Provisioned:
    """The platform chain and the real wallet chain at their heads, as wallet's `migrate`
    (in a thread: Alembic runs an event loop of its own)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(
            upgrade_all,
            [PLATFORM_CHAIN, WALLET_CHAIN],
            databases.vaultpay_owner_dsn,
            databases.app_role("wallet"),
            chain_roles=databases.chain_roles(),
        ).result()
    return databases


def new_key(caller: str) -> IdempotencyKey:
    return IdempotencyKey(caller, "M", str(uuid.uuid4()), request_fingerprint(b""))
