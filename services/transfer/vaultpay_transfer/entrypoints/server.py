"""The transfer service process.

python -m vaultpay_transfer.entrypoints.server
"""

from __future__ import annotations

from vaultpay_common.grpc.server import run_service
from vaultpay_common.logging import configure_logging
from vaultpay_transfer.entrypoints.bootstrap import build_host
from vaultpay_transfer.settings import TransferSettings

__all__ = ["main"]


async def _serve() -> None:
    settings = TransferSettings()
    configure_logging("transfer", settings.log_level)
    host = await build_host(settings)
    await host.start()
    await host.serve_until_signal()


def main() -> None:
    run_service(_serve)


if __name__ == "__main__":
    main()
