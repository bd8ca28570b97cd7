"""Builds the contract's descriptor set once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from vaultpay_devstack.routes import ContractMethod, contract_methods, load_contract


@pytest.fixture(scope="session")
def contract() -> descriptor_pb2.FileDescriptorSet:
    """Our protos as the gateway sees them, with source info for comment checks."""
    return load_contract()


@pytest.fixture(scope="session")
def methods(contract: descriptor_pb2.FileDescriptorSet) -> list[ContractMethod]:
    found = list(contract_methods(contract))
    assert found, "no RPCs found under protos/vaultpay"
    return found


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks this folder's tests `contract`, so `pytest -m contract` selects them."""
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.contract)
