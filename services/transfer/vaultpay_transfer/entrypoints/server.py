"""The transfer service process.

python -m vaultpay_transfer.entrypoints.server
"""

from __future__ import annotations

from vaultpay_common.grpc.server import run_service
from vaultpay_transfer.entrypoints.bootstrap import build_host
from vaultpay_transfer.entrypoints.cli import cli
from vaultpay_transfer.settings import TransferSettings

__all__ = ["main"]


def main() -> None:
    run_service("transfer", TransferSettings, build_host, schema=cli.chains)


if __name__ == "__main__":
    main()
