"""The contract's access rules drive the interceptor; anything without a rule is denied."""

import re
from dataclasses import dataclass
from typing import Any, cast

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.descriptor import ServiceDescriptor

from vaultpay.auth.v1 import auth_pb2
from vaultpay.authz.v1 import authz_pb2
from vaultpay.type.v1 import role_pb2
from vaultpay_common.context import Role
from vaultpay_common.grpc.authz import AccessRuleMissingError, AuthInterceptor
from vaultpay_common.grpc.revocations import RevocationSet
from vaultpay_common.grpc.rules import (
    AccessRule,
    InternalRuleWithoutCallersError,
    load_access_rules,
    rule_of,
)
from vaultpay_common.grpc.tokens import Introspection, TokenInvalidError, TokenVerifier

SERVICES = list(auth_pb2.DESCRIPTOR.services_by_name.values())


def test_rules_are_read_from_the_proto_options() -> None:
    rules = load_access_rules(SERVICES)
    assert rules["/vaultpay.auth.v1.AuthService/Login"] == AccessRule(public=True)
    assert rules["/vaultpay.auth.v1.AuthService/GetMe"] == AccessRule(
        min_role=Role.USER, strict=True
    )
    assert rules["/vaultpay.auth.v1.AuthAdminService/SetUserRole"] == AccessRule(
        min_role=Role.ADMIN, strict=True
    )
    assert rules["/vaultpay.auth.v1.AuthInternalService/IntrospectToken"] == AccessRule(
        internal=True, callers=frozenset({"kyc", "transfer", "wallet"})
    )
    # Least privilege: the contact (email, name) only to the service that sends mail; the
    # role, which the staff rank rule needs, to wallet and kyc.
    assert rules["/vaultpay.auth.v1.AuthInternalService/GetUserContact"] == AccessRule(
        internal=True, callers=frozenset({"wallet"})
    )
    assert rules["/vaultpay.auth.v1.AuthInternalService/GetUserRole"] == AccessRule(
        internal=True, callers=frozenset({"kyc", "wallet"})
    )


def _options(**fields: Any) -> descriptor_pb2.MethodOptions:
    options = descriptor_pb2.MethodOptions()
    options.Extensions[authz_pb2.rule].CopyFrom(authz_pb2.AccessRule(**fields))
    return options


@dataclass
class _Method:
    name: str
    options: descriptor_pb2.MethodOptions

    def GetOptions(self) -> descriptor_pb2.MethodOptions:
        return self.options


@dataclass
class _Service:
    full_name: str
    methods: list[_Method]


def test_an_internal_rule_without_callers_fails_to_load() -> None:
    """Deny by default: a service refuses to start rather than admit every service."""
    with pytest.raises(InternalRuleWithoutCallersError, match="callers"):
        rule_of(_options(internal=True))
    probe = _Service("vaultpay.test.v1.Probe", [_Method("Stats", _options(internal=True))])
    with pytest.raises(
        InternalRuleWithoutCallersError, match=re.escape("/vaultpay.test.v1.Probe/Stats")
    ):
        load_access_rules([cast(ServiceDescriptor, probe)])


def test_an_internal_rule_keeps_the_callers_it_names() -> None:
    rule = rule_of(_options(internal=True, callers=["wallet", "transfer"]))
    assert rule == AccessRule(internal=True, callers=frozenset({"wallet", "transfer"}))
    # Callers mean nothing without `internal`: a human rule admits no service by name.
    human = rule_of(_options(min_role=role_pb2.ROLE_USER, callers=["wallet"]))
    assert human == AccessRule(min_role=Role.USER)


@dataclass
class _Metadatum:
    key: str
    value: str


class _Context:
    def __init__(self, metadata: dict[str, str]) -> None:
        self._metadata = [_Metadatum(k, v) for k, v in metadata.items()]

    def invocation_metadata(self) -> list[_Metadatum]:
        return self._metadata


class _NeverIntrospect:
    async def introspect(self, token: str) -> Introspection:
        raise AssertionError("not expected")


async def _no_keys() -> list[dict[str, str]]:
    return []


def _interceptor() -> AuthInterceptor:
    verifier = TokenVerifier(_no_keys, issuer="i", audience="a", service="wallet")
    revoked = RevocationSet(max_staleness=1.0, retention=60.0)
    return AuthInterceptor(
        load_access_rules(SERVICES), verifier, _NeverIntrospect(), revocations=revoked
    )


async def test_a_method_without_a_rule_is_denied_before_any_token_check() -> None:
    with pytest.raises(AccessRuleMissingError):
        await _interceptor().authorize("/vaultpay.auth.v1.AuthService/Undeclared", _Context({}))


async def test_public_methods_need_no_token() -> None:
    assert (
        await _interceptor().authorize("/vaultpay.auth.v1.AuthService/Login", _Context({})) is None
    )


async def test_protected_methods_need_a_bearer_token() -> None:
    with pytest.raises(TokenInvalidError):
        await _interceptor().authorize("/vaultpay.auth.v1.AuthService/GetMe", _Context({}))


def test_nul_characters_are_found_at_any_depth_with_their_field_path() -> None:
    from vaultpay.auth.v1 import auth_pb2 as pb
    from vaultpay_common.grpc.hygiene import nul_violations

    request = pb.GetJwksResponse(keys=[pb.JsonWebKey(kid="ok"), pb.JsonWebKey(kid="bad\x00")])
    assert [v.field for v in nul_violations(request)] == ["keys[1].kid"]
    assert nul_violations(pb.LoginRequest(email="a@example.com", password="fine")) == []
