"""The wallet service process.

python -m vaultpay_wallet.entrypoints.server
"""

from __future__ import annotations

from vaultpay_common.grpc.server import run_service
from vaultpay_wallet.entrypoints.bootstrap import build_host
from vaultpay_wallet.settings import WalletSettings

__all__ = ["main"]


def main() -> None:
    run_service("wallet", WalletSettings, build_host)


if __name__ == "__main__":
    main()
