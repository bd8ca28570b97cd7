"""Well-known locations inside the repository."""

from __future__ import annotations

import sysconfig
from pathlib import Path

__all__ = [
    "BUILD_DIR",
    "DESCRIPTOR_SET",
    "GATEWAY_DIR",
    "GEN_PYTHON",
    "LOCAL_DIR",
    "PROTOS",
    "REPO_ROOT",
    "SERVICES_DIR",
    "THIRD_PARTY",
    "VAR_DIR",
    "site_packages",
]

REPO_ROOT = Path(__file__).resolve().parents[3]
PROTOS = REPO_ROOT / "protos"
THIRD_PARTY = PROTOS / "third_party"
GEN_PYTHON = PROTOS / "gen" / "python"
BUILD_DIR = REPO_ROOT / "build"
DESCRIPTOR_SET = BUILD_DIR / "vaultpay.binpb"
VAR_DIR = REPO_ROOT / "var"
SERVICES_DIR = REPO_ROOT / "services"
GATEWAY_DIR = REPO_ROOT / "gateway"
LOCAL_DIR = REPO_ROOT / "deploy" / "local"


def site_packages() -> Path:
    """The virtualenv's site-packages, where grpc_tools keeps the well-known protos."""
    return Path(sysconfig.get_paths()["purelib"])
