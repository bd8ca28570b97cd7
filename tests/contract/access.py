"""Reads the `vaultpay.authz.v1.rule` option of an RPC, the way the interceptor will."""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf import descriptor_pb2

from vaultpay.authz.v1 import authz_pb2
from vaultpay.type.v1 import role_pb2

__all__ = ["Access", "access_rule", "is_internal_service"]

_INTERNAL_SERVICE_SUFFIX = "InternalService"


@dataclass(frozen=True)
class Access:
    """The meaning of an access rule, comparable with what API.md says."""

    public: bool = False
    internal: bool = False
    min_role: str = "ROLE_UNSPECIFIED"
    strict: bool = False
    # With internal: the service principals allowed to call. API.md documents an internal RPC
    # as "service" without naming them, so they take no part in the comparison with it.
    callers: tuple[str, ...] = field(default=(), compare=False)

    @property
    def meanings(self) -> int:
        """How many of public / internal / a minimum role the rule sets; exactly 1 is valid."""
        return self.public + self.internal + (self.min_role != "ROLE_UNSPECIFIED")


def access_rule(method: descriptor_pb2.MethodDescriptorProto) -> Access | None:
    """The RPC's rule, or None without one.

    The options are parsed again because a descriptor set parsed before authz_pb2 was
    imported keeps the extension as an unknown field.
    """
    options = descriptor_pb2.MethodOptions.FromString(method.options.SerializeToString())
    if not options.HasExtension(authz_pb2.rule):
        return None
    rule = options.Extensions[authz_pb2.rule]
    return Access(
        public=rule.public,
        internal=rule.internal,
        min_role=role_pb2.Role.Name(rule.min_role),
        strict=rule.strict,
        callers=tuple(rule.callers),
    )


def is_internal_service(service: str) -> bool:
    """Internal services serve the mesh only: the gateway exposes none of their RPCs."""
    return service.endswith(_INTERNAL_SERVICE_SUFFIX)
