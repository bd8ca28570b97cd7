"""(e) protos/gen/python is exactly what `make protos` writes from protos/."""

from __future__ import annotations

import shutil
from pathlib import Path

from vaultpay_devstack import protogen
from vaultpay_devstack.paths import GEN_PYTHON


def test_generated_stubs_match_the_protos() -> None:
    assert protogen.main(["--check", "--out", str(GEN_PYTHON)]) == 0, "run `make protos`"


def test_drift_check_notices_an_edited_stub(tmp_path: Path) -> None:
    copy = tmp_path / "python"
    shutil.copytree(GEN_PYTHON, copy)
    stub = copy / "vaultpay" / "wallet" / "v1" / "wallet_pb2.py"
    stub.write_text(stub.read_text(encoding="utf-8") + "\n# edited by hand\n", encoding="utf-8")
    assert protogen.main(["--check", "--out", str(copy)]) == 1
