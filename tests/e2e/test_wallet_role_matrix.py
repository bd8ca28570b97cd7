"""Who may call what, for every wallet RPC and every kind of caller, generated from the
contract (tests/e2e/role_matrix.py). The wallet is called directly (the service enforces the
rule whatever the edge does); internal RPCs are also checked to be unreachable through the
gateway.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor

from tests.e2e import role_matrix as matrix
from tests.e2e.conftest import Gateway
from tests.e2e.wallet_support import gateway_grpc_address
from vaultpay.wallet.v1 import wallet_pb2
from vaultpay_devstack.mesh import Mesh

CONTRACT = wallet_pb2.DESCRIPTOR


@pytest.fixture(scope="module")
async def tokens(mesh: Mesh, gateway: Gateway) -> dict[str, str | None]:
    return await matrix.callers(mesh, gateway, "wallet")


@pytest.fixture(scope="module")
async def wallet_channel(mesh: Mesh) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(mesh.grpc_address("wallet")) as channel:
        yield channel


def test_the_contract_gives_every_wallet_rpc_exactly_one_meaning() -> None:
    assert len(list(matrix.methods(CONTRACT))) >= 30
    matrix.check_one_meaning(CONTRACT)


@pytest.mark.parametrize(("method", "principal"), matrix.cases(CONTRACT))
async def test_each_caller_gets_what_the_contract_rule_says(
    method: MethodDescriptor,
    principal: str,
    tokens: dict[str, str | None],
    wallet_channel: grpc.aio.Channel,
) -> None:
    outcome = await matrix.call(wallet_channel, method, tokens[principal])
    matrix.check(outcome, method, principal)


@pytest.mark.parametrize("method", matrix.internal_methods(CONTRACT))
async def test_internal_rpcs_are_not_routed_through_the_gateway(
    method: MethodDescriptor, mesh: Mesh, tokens: dict[str, str | None]
) -> None:
    async with grpc.aio.insecure_channel(gateway_grpc_address(mesh)) as channel:
        outcome = await matrix.call(channel, method, matrix.caller_token(tokens, method))
    assert outcome.code == grpc.StatusCode.UNIMPLEMENTED, outcome
