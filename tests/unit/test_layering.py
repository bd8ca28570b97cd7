"""Domain and service-layer code stays free of infrastructure (STYLE.md, cosmicpython).

Every service's `domain/` and `service_layer/` may import the standard library, the platform's
pure modules and their own package, but never grpc, SQLAlchemy, Redis, asyncpg or generated
`*_pb2` modules: those belong to adapters and entrypoints.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parents[2] / "services"
FORBIDDEN_ROOTS = {"grpc", "sqlalchemy", "redis", "asyncpg", "grpc_status", "google"}
LAYERS = ("domain", "service_layer")


def _layer_modules() -> list[Path]:
    found = []
    for service in sorted(SERVICES.iterdir()):
        for package in sorted(service.glob("vaultpay_*")):
            for layer in LAYERS:
                found += sorted((package / layer).rglob("*.py"))
    return found


def _imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _is_forbidden(name: str) -> bool:
    root = name.split(".")[0]
    return root in FORBIDDEN_ROOTS or name.startswith("vaultpay.") or name.endswith("_pb2")


def test_there_are_layer_modules_to_check() -> None:
    assert len(_layer_modules()) >= 5


@pytest.mark.parametrize("module", _layer_modules(), ids=lambda p: str(p.relative_to(SERVICES)))
def test_domain_and_service_layer_import_no_infrastructure(module: Path) -> None:
    bad = [name for name in _imports(module) if _is_forbidden(name)]
    assert not bad, f"{module} imports infrastructure: {bad}"


def test_the_check_itself_catches_an_infrastructure_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import sqlalchemy\nfrom vaultpay.wallet.v1 import wallet_pb2\nimport json\n")
    assert [n for n in _imports(sample) if _is_forbidden(n)] == ["sqlalchemy", "vaultpay.wallet.v1"]
