"""The role matrix of a service, generated from its contract: each method's
`vaultpay.authz.v1.rule` option decides what every kind of caller must get.

Each case calls the service directly over native gRPC with an empty request (a client stream
sends one empty message, a server stream counts as answered at its first message): a denied
caller gets UNAUTHENTICATED (no token) or PERMISSION_DENIED before the request is looked at;
an allowed one gets anything else, but never UNKNOWN, INTERNAL or UNIMPLEMENTED.

    for case in cases(wallet_pb2.DESCRIPTOR): ...
    outcome = await call(channel, method, token)
    check(outcome, method, principal)
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor import FileDescriptor, MethodDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass

from tests.e2e.conftest import Gateway
from tests.e2e.wallet_support import bearer, service_token, staff_token
from vaultpay.authz.v1 import authz_pb2
from vaultpay.type.v1 import role_pb2
from vaultpay_devstack.mesh import Mesh
from vaultpay_devstack.services import SERVICE_CLIENTS

__all__ = [
    "ROLES",
    "Outcome",
    "allowed",
    "call",
    "caller_token",
    "callers",
    "cases",
    "check",
    "check_one_meaning",
    "internal_methods",
    "methods",
    "rule",
]

_SERVICE = "service:"
# Every kind of caller, with the human role it holds (None: no role): each service identity is
# a caller of its own ("service:wallet", ...), since an internal rule admits only those it names.
ROLES: dict[str, int | None] = {
    "anonymous": None,
    "user": role_pb2.ROLE_USER,
    "moderator": role_pb2.ROLE_MODERATOR,
    "admin": role_pb2.ROLE_ADMIN,
    "super_admin": role_pb2.ROLE_SUPER_ADMIN,
    **{f"{_SERVICE}{client}": None for client in SERVICE_CLIENTS},
}
DENIED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
# An allowed call with an empty request may fail validation, but never like this.
BROKEN = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNIMPLEMENTED}
CALL_TIMEOUT_S = 15.0


def methods(contract: FileDescriptor) -> Iterator[MethodDescriptor]:
    for service in contract.services_by_name.values():
        yield from service.methods


def rule(method: MethodDescriptor) -> authz_pb2.AccessRule | None:
    options = method.GetOptions()
    if not options.HasExtension(authz_pb2.rule):
        return None
    found: authz_pb2.AccessRule = options.Extensions[authz_pb2.rule]
    return found


def allowed(access: authz_pb2.AccessRule | None, principal: str) -> bool:
    """What authz.proto says: public is anyone, internal is the services the rule names
    (callers) only, min_role is that human role or higher; no rule is nobody (deny by
    default)."""
    if access is None:
        return False
    if access.public:
        return True
    if access.internal:
        return principal.startswith(_SERVICE) and principal[len(_SERVICE) :] in access.callers
    role = ROLES[principal]
    return (
        access.min_role != role_pb2.ROLE_UNSPECIFIED
        and role is not None
        and role >= access.min_role
    )


def _id(method: MethodDescriptor) -> str:
    return f"{method.containing_service.name}.{method.name}"


def cases(contract: FileDescriptor) -> list[Any]:
    """One test case per (method, kind of caller)."""
    return [
        pytest.param(method, principal, id=f"{_id(method)}-{principal}")
        for method in methods(contract)
        for principal in ROLES
    ]


def internal_methods(contract: FileDescriptor) -> list[Any]:
    return [
        pytest.param(m, id=_id(m))
        for m in methods(contract)
        if (access := rule(m)) is not None and access.internal
    ]


def check_one_meaning(contract: FileDescriptor) -> None:
    """Every RPC is exactly one of public, internal or min_role, and internal exactly on the
    *InternalService services."""
    for method in methods(contract):
        access = rule(method)
        assert access is not None, f"{method.full_name} declares no access rule"
        meanings = [access.public, access.internal, access.min_role != role_pb2.ROLE_UNSPECIFIED]
        assert sum(meanings) == 1, f"{method.full_name}: {access}"
        internal_service = method.containing_service.name.endswith("InternalService")
        assert access.internal == internal_service, method.full_name


async def callers(mesh: Mesh, gateway: Gateway, service: str) -> dict[str, str | None]:
    """One token per kind of caller, a service token for each service identity, addressed to
    `service` (the one whose RPCs the matrix calls)."""
    return {
        "anonymous": None,
        "user": gateway.user_token(),
        "moderator": staff_token(mesh, gateway, "MODERATOR"),
        "admin": staff_token(mesh, gateway, "ADMIN"),
        "super_admin": staff_token(mesh, gateway, "SUPER_ADMIN"),
    } | {
        f"{_SERVICE}{client}": await service_token(mesh, client, to=service)
        for client in SERVICE_CLIENTS
    }


def caller_token(tokens: dict[str, str | None], method: MethodDescriptor) -> str | None:
    """The token of a service that an internal method's rule names (its first caller)."""
    access = rule(method)
    assert access is not None and access.callers, method.full_name
    return tokens[f"{_SERVICE}{access.callers[0]}"]


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    details: str


async def call(channel: grpc.aio.Channel, method: MethodDescriptor, token: str | None) -> Outcome:
    """Calls `method` with an empty request."""
    path = f"/{method.containing_service.full_name}/{method.name}"
    request_type: type[Message] = GetMessageClass(method.input_type)
    response_type: type[Message] = GetMessageClass(method.output_type)
    codec: dict[str, Any] = {
        "request_serializer": request_type.SerializeToString,
        "response_deserializer": response_type.FromString,
    }
    metadata = bearer(token) if token else ()
    try:
        if method.client_streaming:
            await channel.stream_unary(path, **codec)(
                iter([request_type()]), metadata=metadata, timeout=CALL_TIMEOUT_S
            )
        elif method.server_streaming:
            stream = channel.unary_stream(path, **codec)(
                request_type(), metadata=metadata, timeout=CALL_TIMEOUT_S
            )
            try:
                await stream.read()
            finally:
                stream.cancel()
        else:
            await channel.unary_unary(path, **codec)(
                request_type(), metadata=metadata, timeout=CALL_TIMEOUT_S
            )
    except grpc.aio.AioRpcError as exc:
        return Outcome(exc.code(), exc.details() or "")
    return Outcome(grpc.StatusCode.OK, "")


def check(
    outcome: Outcome,
    method: MethodDescriptor,
    principal: str,
    *,
    not_yet: Collection[str] = (),
) -> None:
    """The outcome the contract's rule demands; `not_yet` names RPCs of the contract this
    release answers UNIMPLEMENTED (after the access check)."""
    if allowed(rule(method), principal) and method.name in not_yet:
        assert outcome.code == grpc.StatusCode.UNIMPLEMENTED, outcome
    elif allowed(rule(method), principal):
        assert outcome.code not in DENIED | BROKEN, outcome
    elif principal == "anonymous":
        assert outcome.code == grpc.StatusCode.UNAUTHENTICATED, outcome
    else:
        assert outcome.code == grpc.StatusCode.PERMISSION_DENIED, outcome
