"""buf lint passes and the breaking-change check guards protos/baseline/contract.binpb."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vaultpay_devstack.paths import PROTOS

_AGAINST = ["breaking", "--against", "baseline/contract.binpb"]


@pytest.fixture(scope="module")
def buf() -> str:
    beside_python = Path(sys.executable).parent / "buf"
    found = str(beside_python) if beside_python.is_file() else shutil.which("buf")
    assert found, "buf not installed (it comes from requirements.lock as buf-bin)"
    return found


def _run(buf: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([buf, *args], cwd=cwd, capture_output=True, text=True, check=False)


def test_buf_lint_passes(buf: str) -> None:
    result = _run(buf, ["lint"], PROTOS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_contract_is_compatible_with_the_baseline(buf: str) -> None:
    result = _run(buf, _AGAINST, PROTOS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_breaking_check_notices_a_renumbered_field(buf: str, tmp_path: Path) -> None:
    protos = tmp_path / "protos"
    shutil.copytree(PROTOS, protos, ignore=shutil.ignore_patterns("gen"))
    wallet = protos / "vaultpay" / "wallet" / "v1" / "wallet.proto"
    text = wallet.read_text(encoding="utf-8")
    assert "  bool pin_set = 9;" in text, "pick another field to renumber"
    wallet.write_text(text.replace("  bool pin_set = 9;", "  bool pin_set = 90;"), encoding="utf-8")

    result = _run(buf, _AGAINST, protos)
    assert result.returncode != 0
    assert "pin_set" in result.stdout
