"""Who may call what, for every kyc RPC and every kind of caller, generated from the contract
(tests/e2e/role_matrix.py). kyc is called directly (the client-streaming UploadKycDocument
with one empty message); the empty AdminRotateKycKey request lacks its required request_id, so
no case rotates anything. Internal RPCs are also checked to be unreachable through the
gateway, and one user's submission is out of another's reach.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor

from tests.e2e import role_matrix as matrix
from tests.e2e.conftest import Gateway
from tests.e2e.wallet_support import gateway_grpc_address, new_person, rid
from vaultpay.kyc.v1 import kyc_pb2
from vaultpay.type.v1 import role_pb2
from vaultpay_devstack.mesh import Mesh

pytestmark = pytest.mark.e2e

CONTRACT = kyc_pb2.DESCRIPTOR


@pytest.fixture(scope="module")
async def tokens(mesh: Mesh, gateway: Gateway) -> dict[str, str | None]:
    return await matrix.callers(mesh, gateway, "kyc")


@pytest.fixture(scope="module")
async def kyc_channel(mesh: Mesh) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(mesh.grpc_address("kyc")) as channel:
        yield channel


def test_the_contract_gives_every_kyc_rpc_exactly_one_meaning_as_api_md_says() -> None:
    matrix.check_one_meaning(CONTRACT)
    methods = {m.name: m for m in matrix.methods(CONTRACT)}
    expected = {
        "SubmitKyc": role_pb2.ROLE_USER,
        "UploadKycDocument": role_pb2.ROLE_USER,
        "GetKycStatus": role_pb2.ROLE_USER,
        "AdminListKycSubmissions": role_pb2.ROLE_MODERATOR,
        "AdminGetKycSubmission": role_pb2.ROLE_MODERATOR,
        "AdminApproveKyc": role_pb2.ROLE_MODERATOR,
        "AdminRejectKyc": role_pb2.ROLE_MODERATOR,
        "AdminRotateKycKey": role_pb2.ROLE_SUPER_ADMIN,
    }
    strict = {"AdminGetKycSubmission", "AdminApproveKyc", "AdminRejectKyc", "AdminRotateKycKey"}
    assert set(methods) == {*expected, "GetKycStats"}
    for name, method in methods.items():
        access = matrix.rule(method)
        assert access is not None
        if name == "GetKycStats":
            assert access.internal
        else:
            assert (access.min_role, access.strict) == (expected[name], name in strict), name


@pytest.mark.parametrize(("method", "principal"), matrix.cases(CONTRACT))
async def test_each_caller_gets_what_the_contract_rule_says(
    method: MethodDescriptor,
    principal: str,
    tokens: dict[str, str | None],
    kyc_channel: grpc.aio.Channel,
) -> None:
    outcome = await matrix.call(kyc_channel, method, tokens[principal])
    matrix.check(outcome, method, principal)


@pytest.mark.parametrize("method", matrix.internal_methods(CONTRACT))
async def test_internal_rpcs_are_not_routed_through_the_gateway(
    method: MethodDescriptor, mesh: Mesh, tokens: dict[str, str | None]
) -> None:
    async with grpc.aio.insecure_channel(gateway_grpc_address(mesh)) as channel:
        outcome = await matrix.call(channel, method, matrix.caller_token(tokens, method))
    assert outcome.code == grpc.StatusCode.UNIMPLEMENTED, outcome


def test_a_users_submission_is_out_of_another_users_reach(gateway: Gateway) -> None:
    owner = new_person(gateway)
    other = new_person(gateway)
    body = {
        "requestId": rid(),
        "documentType": "DOCUMENT_TYPE_PASSPORT",
        "documentNumber": "K1234567",
    }
    assert owner.call(gateway, "POST", "/v1/kyc/submissions", body).status == 200
    mine = other.call(gateway, "GET", "/v1/kyc/status").body
    assert "latestSubmission" not in mine  # the other user sees only their own (none)
    sid = owner.call(gateway, "GET", "/v1/kyc/status").body["latestSubmission"]["submissionId"]
    peek = other.call(gateway, "GET", f"/v1/admin/kyc/{sid}")
    assert peek.status == 403, peek.body
