"""The kyc service process.

python -m vaultpay_kyc.entrypoints.server
"""

from __future__ import annotations

from vaultpay_common.grpc.server import run_service
from vaultpay_kyc.entrypoints.bootstrap import build_host
from vaultpay_kyc.entrypoints.cli import cli
from vaultpay_kyc.settings import KycSettings

__all__ = ["main"]


def main() -> None:
    run_service("kyc", KycSettings, build_host, schema=cli.chains)


if __name__ == "__main__":
    main()
