"""Who may call what, for every transfer RPC and every kind of caller, generated from the
contract (tests/e2e/role_matrix.py). Transfer is called directly; internal RPCs are also
checked to be unreachable through the gateway.

Disputes, refunds and reversals come in a later issue: an allowed caller of those RPCs gets
UNIMPLEMENTED (NOT_YET below), and only those may.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor

from tests.e2e import role_matrix as matrix
from tests.e2e.conftest import Gateway
from tests.e2e.wallet_support import gateway_grpc_address
from vaultpay.transfer.v1 import transfer_pb2
from vaultpay_devstack.mesh import Mesh

CONTRACT = transfer_pb2.DESCRIPTOR
# The contract's RPCs this release does not implement yet (issue: disputes and reversals).
NOT_YET = {
    "OpenDispute",
    "ListMyDisputes",
    "GetDispute",
    "AdminListDisputes",
    "AdminResolveDispute",
    "AdminReverseTransaction",
}


@pytest.fixture(scope="module")
async def tokens(mesh: Mesh, gateway: Gateway) -> dict[str, str | None]:
    return await matrix.callers(mesh, gateway, "transfer")


@pytest.fixture(scope="module")
async def transfer_channel(mesh: Mesh) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(mesh.grpc_address("transfer")) as channel:
        yield channel


def test_the_contract_gives_every_transfer_rpc_exactly_one_meaning() -> None:
    assert len(list(matrix.methods(CONTRACT))) >= 17
    matrix.check_one_meaning(CONTRACT)


@pytest.mark.parametrize(("method", "principal"), matrix.cases(CONTRACT))
async def test_each_caller_gets_what_the_contract_rule_says(
    method: MethodDescriptor,
    principal: str,
    tokens: dict[str, str | None],
    transfer_channel: grpc.aio.Channel,
) -> None:
    outcome = await matrix.call(transfer_channel, method, tokens[principal])
    matrix.check(outcome, method, principal, not_yet=NOT_YET)


@pytest.mark.parametrize("method", matrix.internal_methods(CONTRACT))
async def test_internal_rpcs_are_not_routed_through_the_gateway(
    method: MethodDescriptor, mesh: Mesh, tokens: dict[str, str | None]
) -> None:
    async with grpc.aio.insecure_channel(gateway_grpc_address(mesh)) as channel:
        outcome = await matrix.call(channel, method, matrix.caller_token(tokens, method))
    assert outcome.code == grpc.StatusCode.UNIMPLEMENTED, outcome
