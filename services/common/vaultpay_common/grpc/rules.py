"""Access rules, read from the `vaultpay.authz.v1.rule` method option at start-up.

The contract is the single source of truth for who may call what: each RPC declares its
rule in the .proto, and `load_access_rules` turns the descriptors into a lookup table keyed
by the full gRPC method path. An RPC without a (meaningful) rule is absent from the table,
and the auth interceptor denies anything absent (deny by default). An internal rule names the
services that may call it (`callers`); one that names none is a contract error and fails the
load (`InternalRuleWithoutCallersError`), so a service never starts admitting every service.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.descriptor import ServiceDescriptor

from vaultpay.authz.v1 import authz_pb2
from vaultpay_common.context import Role

__all__ = [
    "STANDARD_PUBLIC_METHODS",
    "AccessRule",
    "InternalRuleWithoutCallersError",
    "load_access_rules",
    "rule_of",
]

# gRPC's own services that every server exposes; they carry no VaultPay rule.
STANDARD_PUBLIC_METHODS = frozenset(
    {
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
        "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    }
)


@dataclass(frozen=True, slots=True)
class AccessRule:
    public: bool = False
    min_role: Role | None = None
    strict: bool = False
    internal: bool = False
    # With `internal`: the service principals ("transfer", not "service:transfer") allowed.
    callers: frozenset[str] = frozenset()


class InternalRuleWithoutCallersError(ValueError):
    """An internal rule that names no calling service: refused at start-up."""


def rule_of(method_options: object) -> AccessRule | None:
    """The rule declared in one method's options, or None when it declares none.

    Raises InternalRuleWithoutCallersError for an internal rule that names no caller."""
    options = method_options
    if not options.HasExtension(authz_pb2.rule):  # type: ignore[attr-defined]
        return None
    declared = options.Extensions[authz_pb2.rule]  # type: ignore[attr-defined]
    min_role = Role(declared.min_role) if declared.min_role else None
    meanings = [declared.public, declared.internal, min_role is not None]
    if sum(meanings) != 1:
        return None  # ambiguous or empty rules are treated as missing: denied
    callers = frozenset(declared.callers)
    if declared.internal and not callers:
        raise InternalRuleWithoutCallersError(
            "an internal rule must name the services that may call it (callers)"
        )
    return AccessRule(
        public=declared.public,
        min_role=min_role,
        strict=declared.strict,
        internal=declared.internal,
        callers=callers if declared.internal else frozenset(),
    )


def load_access_rules(services: Iterable[ServiceDescriptor]) -> dict[str, AccessRule]:
    rules: dict[str, AccessRule] = {
        path: AccessRule(public=True) for path in STANDARD_PUBLIC_METHODS
    }
    for service in services:
        for method in service.methods:
            try:
                rule = rule_of(method.GetOptions())
            except InternalRuleWithoutCallersError as exc:
                raise InternalRuleWithoutCallersError(
                    f"/{service.full_name}/{method.name}: {exc}"
                ) from None
            if rule is not None:
                rules[f"/{service.full_name}/{method.name}"] = rule
    return rules
