"""The wallet service process.

python -m vaultpay_wallet.entrypoints.server
"""

from __future__ import annotations

from vaultpay_common.grpc.server import run_service
from vaultpay_common.logging import configure_logging
from vaultpay_wallet.entrypoints.bootstrap import build_host
from vaultpay_wallet.settings import WalletSettings

__all__ = ["main"]


async def _serve() -> None:
    settings = WalletSettings()
    configure_logging("wallet", settings.log_level)
    host = await build_host(settings)
    await host.start()
    await host.serve_until_signal()


def main() -> None:
    run_service(_serve)


if __name__ == "__main__":
    main()
