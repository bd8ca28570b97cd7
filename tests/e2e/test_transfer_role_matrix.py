"""Who may call what, for every transfer RPC and every kind of caller, generated from the
contract: each method's `vaultpay.authz.v1.rule` option, read from the transfer proto's
service descriptors, decides what the running service must answer.

Each case calls the transfer service directly over native gRPC (the service enforces the rule
whatever the edge does) with an empty request: a denied caller gets UNAUTHENTICATED (no
token) or PERMISSION_DENIED before the request is looked at; an allowed one gets anything
else (INVALID_ARGUMENT for the empty request, NOT_FOUND for a caller without a wallet, OK).
Disputes, refunds and reversals come in a later issue: an allowed caller of those RPCs gets
UNIMPLEMENTED (NOT_YET below), and only those may.
Internal RPCs are also checked to be unreachable through the gateway.
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
from tests.e2e.wallet_support import bearer, gateway_grpc_address, service_token, staff_token
from vaultpay.authz.v1 import authz_pb2
from vaultpay.transfer.v1 import transfer_pb2
from vaultpay.type.v1 import role_pb2
from vaultpay_devstack.mesh import Mesh

# Every kind of caller, with the human role it holds (None: no role).
ROLES: dict[str, int | None] = {
    "anonymous": None,
    "user": role_pb2.ROLE_USER,
    "moderator": role_pb2.ROLE_MODERATOR,
    "admin": role_pb2.ROLE_ADMIN,
    "super_admin": role_pb2.ROLE_SUPER_ADMIN,
    "service": None,
}
DENIED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
# An allowed call with an empty request may fail validation, but never like this.
BROKEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNIMPLEMENTED}
CALL_TIMEOUT_S = 15.0
# The contract's RPCs this release does not implement yet (issue: disputes and reversals).
NOT_YET = {
    "OpenDispute",
    "ListMyDisputes",
    "GetDispute",
    "AdminListDisputes",
    "AdminResolveDispute",
    "AdminReverseTransaction",
}


def _transfer_methods() -> Iterator[MethodDescriptor]:
    for service in transfer_pb2.DESCRIPTOR.services_by_name.values():
        yield from service.methods


def _rule(method: MethodDescriptor) -> authz_pb2.AccessRule | None:
    options = method.GetOptions()
    if not options.HasExtension(authz_pb2.rule):
        return None
    rule: authz_pb2.AccessRule = options.Extensions[authz_pb2.rule]
    return rule


def allowed(rule: authz_pb2.AccessRule | None, principal: str) -> bool:
    """What authz.proto says: public is anyone, internal is services only, min_role is that
    human role or higher; no rule is nobody (deny by default)."""
    if rule is None:
        return False
    if rule.public:
        return True
    if rule.internal:
        return principal == "service"
    role = ROLES[principal]
    return rule.min_role != role_pb2.ROLE_UNSPECIFIED and role is not None and role >= rule.min_role


def _cases() -> Iterator[Any]:
    for method in _transfer_methods():
        for principal in ROLES:
            yield pytest.param(
                method, principal, id=f"{method.containing_service.name}.{method.name}-{principal}"
            )


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    details: str


async def _call(channel: grpc.aio.Channel, method: MethodDescriptor, token: str | None) -> Outcome:
    """Calls `method` with an empty request; a stream counts as answered at its first message."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    request_type: type[Message] = GetMessageClass(method.input_type)
    response_type: type[Message] = GetMessageClass(method.output_type)
    metadata = bearer(token) if token else ()
    try:
        if method.server_streaming:
            stream = channel.unary_stream(
                path,
                request_serializer=request_type.SerializeToString,
                response_deserializer=response_type.FromString,
            )(request_type(), metadata=metadata, timeout=CALL_TIMEOUT_S)
            try:
                await stream.read()
            finally:
                stream.cancel()
        else:
            await channel.unary_unary(
                path,
                request_serializer=request_type.SerializeToString,
                response_deserializer=response_type.FromString,
            )(request_type(), metadata=metadata, timeout=CALL_TIMEOUT_S)
    except grpc.aio.AioRpcError as exc:
        return Outcome(exc.code(), exc.details() or "")
    return Outcome(grpc.StatusCode.OK, "")


@pytest.fixture(scope="module")
async def tokens(mesh: Mesh, gateway: Gateway) -> dict[str, str | None]:
    """One token per kind of caller, shared by every case of this module."""
    return {
        "anonymous": None,
        "user": gateway.user_token(),
        "moderator": staff_token(mesh, gateway, "MODERATOR"),
        "admin": staff_token(mesh, gateway, "ADMIN"),
        "super_admin": staff_token(mesh, gateway, "SUPER_ADMIN"),
        "service": await service_token(mesh, "transfer"),
    }


@pytest.fixture(scope="module")
async def transfer_channel(mesh: Mesh) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(mesh.grpc_address("transfer")) as channel:
        yield channel


def test_the_contract_gives_every_transfer_rpc_exactly_one_meaning() -> None:
    methods = list(_transfer_methods())
    assert len(methods) >= 17, [m.full_name for m in methods]
    for method in methods:
        rule = _rule(method)
        assert rule is not None, f"{method.full_name} declares no access rule"
        meanings = [rule.public, rule.internal, rule.min_role != role_pb2.ROLE_UNSPECIFIED]
        assert sum(meanings) == 1, f"{method.full_name}: {rule}"
        internal_service = method.containing_service.name.endswith("InternalService")
        assert rule.internal == internal_service, method.full_name


@pytest.mark.parametrize(("method", "principal"), list(_cases()))
async def test_each_caller_gets_what_the_contract_rule_says(
    method: MethodDescriptor,
    principal: str,
    tokens: dict[str, str | None],
    transfer_channel: grpc.aio.Channel,
) -> None:
    outcome = await _call(transfer_channel, method, tokens[principal])
    if allowed(_rule(method), principal) and method.name in NOT_YET:
        assert outcome.code == grpc.StatusCode.UNIMPLEMENTED, outcome
    elif allowed(_rule(method), principal):
        assert outcome.code not in DENIED | BROKEN, outcome
    elif principal == "anonymous":
        assert outcome.code == grpc.StatusCode.UNAUTHENTICATED, outcome
    else:
        assert outcome.code == grpc.StatusCode.PERMISSION_DENIED, outcome


def _internal_methods() -> list[Any]:
    return [
        pytest.param(m, id=f"{m.containing_service.name}.{m.name}")
        for m in _transfer_methods()
        if (rule := _rule(m)) is not None and rule.internal
    ]


@pytest.mark.parametrize("method", _internal_methods())
async def test_internal_rpcs_are_not_routed_through_the_gateway(
    method: MethodDescriptor, mesh: Mesh, tokens: dict[str, str | None]
) -> None:
    async with grpc.aio.insecure_channel(gateway_grpc_address(mesh)) as channel:
        outcome = await _call(channel, method, tokens["service"])
    assert outcome.code == grpc.StatusCode.UNIMPLEMENTED, outcome
