"""The wallet service process.

python -m vaultpay_wallet.entrypoints.server
"""

from __future__ import annotations

from functools import partial

from vaultpay_common.config import SmtpSettings, load_settings
from vaultpay_common.grpc.server import run_service
from vaultpay_wallet.entrypoints.bootstrap import build_host
from vaultpay_wallet.entrypoints.cli import cli
from vaultpay_wallet.settings import WalletSettings

__all__ = ["main"]


def main() -> None:
    # The mail relay's settings are shared (VAULTPAY_SMTP_*), checked at start like wallet's own.
    smtp = load_settings(SmtpSettings, "vaultpay-wallet")
    run_service("wallet", WalletSettings, partial(build_host, smtp=smtp), schema=cli.chains)


if __name__ == "__main__":
    main()
