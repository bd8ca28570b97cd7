"""The contract's access rules drive the interceptor; anything without a rule is denied."""

from dataclasses import dataclass

import pytest

from vaultpay.auth.v1 import auth_pb2
from vaultpay_common.context import Role
from vaultpay_common.grpc.authz import AccessRuleMissingError, AuthInterceptor
from vaultpay_common.grpc.revocations import RevocationSet
from vaultpay_common.grpc.rules import AccessRule, load_access_rules
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
        internal=True
    )


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
    verifier = TokenVerifier(_no_keys, issuer="i", audience="a")
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
