"""Shared by the wallet's integration tests: its migrations w0001-w0004 alone, in a private
script dir (so later revisions of other engineers do not take part in these tests), and a
fresh idempotency key."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

from vaultpay_common.idempotency import IdempotencyKey, request_fingerprint
from vaultpay_common.migrations import MigrationChain

__all__ = ["WALLET_MIGRATIONS", "new_key", "private_wallet_chain"]

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


def new_key(caller: str) -> IdempotencyKey:
    return IdempotencyKey(caller, "M", str(uuid.uuid4()), request_fingerprint(b""))
