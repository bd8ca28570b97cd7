"""Writes the gateway's OpenAPI document.

python -m vaultpay_gateway.openapi --descriptor build/vaultpay.binpb --out build/openapi.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vaultpay_gateway.contract import ContractError
from vaultpay_gateway.openapi import write_openapi

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vaultpay_gateway.openapi", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--descriptor", type=Path, required=True, help="descriptor set")
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON")
    args = parser.parse_args(argv)
    try:
        out = write_openapi(args.descriptor, args.out)
    except ContractError as exc:
        print(f"vaultpay_gateway.openapi: {exc}", file=sys.stderr)
        return 1
    print(f"OpenAPI document written to {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
