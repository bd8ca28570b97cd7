"""Who may call what, for every kyc RPC and every kind of caller, generated from the contract:
each method's `vaultpay.authz.v1.rule` option, read from the kyc proto's service descriptors,
decides what the running service must answer (the approach of test_wallet_role_matrix.py).

Each case calls kyc directly over native gRPC with an empty request (the client-streaming
UploadKycDocument with one empty message): a denied caller gets UNAUTHENTICATED (no token) or
PERMISSION_DENIED before the request is looked at; an allowed one gets anything else
(INVALID_ARGUMENT for the empty request, OK for reads). The empty AdminRotateKycKey request
lacks its required request_id, so no case rotates anything. Internal RPCs are also checked to
be unreachable through the gateway, and one user's submission is out of another's reach.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from tests.e2e.conftest import Gateway
from tests.e2e.test_wallet_role_matrix import ROLES, allowed
from tests.e2e.wallet_support import (
    bearer,
    gateway_grpc_address,
    new_person,
    rid,
    service_token,
    staff_token,
)
from vaultpay.authz.v1 import authz_pb2
from vaultpay.kyc.v1 import kyc_pb2
from vaultpay.type.v1 import role_pb2
from vaultpay_devstack.mesh import Mesh

pytestmark = pytest.mark.e2e

DENIED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
BROKEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNIMPLEMENTED}
CALL_TIMEOUT_S = 15.0


def _kyc_methods() -> Iterator[MethodDescriptor]:
    for service in kyc_pb2.DESCRIPTOR.services_by_name.values():
        yield from service.methods


def _rule(method: MethodDescriptor) -> authz_pb2.AccessRule | None:
    options = method.GetOptions()
    if not options.HasExtension(authz_pb2.rule):
        return None
    rule: authz_pb2.AccessRule = options.Extensions[authz_pb2.rule]
    return rule


def _cases() -> Iterator[Any]:
    for method in _kyc_methods():
        for principal in ROLES:
            yield pytest.param(
                method, principal, id=f"{method.containing_service.name}.{method.name}-{principal}"
            )


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    details: str


async def _call(channel: grpc.aio.Channel, method: MethodDescriptor, token: str | None) -> Outcome:
    """Calls `method` with an empty request (a client stream sends one empty message)."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    request_type: type[Message] = GetMessageClass(method.input_type)
    response_type: type[Message] = GetMessageClass(method.output_type)
    metadata = bearer(token) if token else ()
    serializers: dict[str, Any] = {
        "request_serializer": request_type.SerializeToString,
        "response_deserializer": response_type.FromString,
    }
    try:
        if method.client_streaming:
            await channel.stream_unary(path, **serializers)(
                iter([request_type()]), metadata=metadata, timeout=CALL_TIMEOUT_S
            )
        else:
            await channel.unary_unary(path, **serializers)(
                request_type(), metadata=metadata, timeout=CALL_TIMEOUT_S
            )
    except grpc.aio.AioRpcError as exc:
        return Outcome(exc.code(), exc.details() or "")
    return Outcome(grpc.StatusCode.OK, "")


@pytest.fixture(scope="module")
async def tokens(mesh: Mesh, gateway: Gateway) -> dict[str, str | None]:
    return {
        "anonymous": None,
        "user": gateway.user_token(),
        "moderator": staff_token(mesh, gateway, "MODERATOR"),
        "admin": staff_token(mesh, gateway, "ADMIN"),
        "super_admin": staff_token(mesh, gateway, "SUPER_ADMIN"),
        "service": await service_token(mesh, "wallet"),
    }


@pytest.fixture(scope="module")
async def kyc_channel(mesh: Mesh) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(mesh.grpc_address("kyc")) as channel:
        yield channel


def test_the_contract_gives_every_kyc_rpc_exactly_one_meaning_as_api_md_says() -> None:
    methods = {m.name: m for m in _kyc_methods()}
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
        rule = _rule(method)
        assert rule is not None, f"{name} declares no access rule"
        meanings = [rule.public, rule.internal, rule.min_role != role_pb2.ROLE_UNSPECIFIED]
        assert sum(meanings) == 1, f"{name}: {rule}"
        if name == "GetKycStats":
            assert rule.internal
        else:
            assert (rule.min_role, rule.strict) == (expected[name], name in strict), name


@pytest.mark.parametrize(("method", "principal"), list(_cases()))
async def test_each_caller_gets_what_the_contract_rule_says(
    method: MethodDescriptor,
    principal: str,
    tokens: dict[str, str | None],
    kyc_channel: grpc.aio.Channel,
) -> None:
    outcome = await _call(kyc_channel, method, tokens[principal])
    if allowed(_rule(method), principal):
        assert outcome.code not in DENIED | BROKEN, outcome
    elif principal == "anonymous":
        assert outcome.code == grpc.StatusCode.UNAUTHENTICATED, outcome
    else:
        assert outcome.code == grpc.StatusCode.PERMISSION_DENIED, outcome


def _internal_methods() -> list[Any]:
    return [
        pytest.param(m, id=f"{m.containing_service.name}.{m.name}")
        for m in _kyc_methods()
        if (rule := _rule(m)) is not None and rule.internal
    ]


@pytest.mark.parametrize("method", _internal_methods())
async def test_internal_rpcs_are_not_routed_through_the_gateway(
    method: MethodDescriptor, mesh: Mesh, tokens: dict[str, str | None]
) -> None:
    async with grpc.aio.insecure_channel(gateway_grpc_address(mesh)) as channel:
        outcome = await _call(channel, method, tokens["service"])
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
