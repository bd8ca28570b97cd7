"""A user's role from auth's GetUserContact (wallet's staff actions, kyc's decisions): any
answer but a role is AUTH_UNAVAILABLE, so an action whose rank cannot be checked fails closed."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from vaultpay.auth.v1 import auth_pb2
from vaultpay.type.v1 import role_pb2
from vaultpay_common.context import Role
from vaultpay_common.errors import ErrorKind, UnavailableError
from vaultpay_common.grpc.auth_client import AuthUnavailableError
from vaultpay_common.grpc.user_roles import GrpcUserRoles
from vaultpay_wallet.adapters.peers import GrpcUserContacts


class _Auth:
    """A stand-in for auth's internal stub: answers `role`, or raises `failure`."""

    def __init__(self, role: int = role_pb2.ROLE_ADMIN, failure: Exception | None = None) -> None:
        self.role = role_pb2.Role.ValueType(role)
        self.failure = failure
        self.asked: list[str] = []

    async def GetUserContact(self, request: Any, **kwargs: Any) -> Any:
        self.asked.append(request.user_id)
        if self.failure is not None:
            raise self.failure
        return auth_pb2.GetUserContactResponse(email="a@example.com", active=True, role=self.role)


async def _token() -> str:
    return "service-token"


async def _no_token() -> str:
    raise AuthUnavailableError()


def _roles(auth: _Auth, token: Any = _token) -> GrpcUserRoles:
    roles = GrpcUserRoles(grpc.aio.insecure_channel("127.0.0.1:1"), token, 1.0, whose="owner")
    roles._stub = auth  # type: ignore[assignment]
    return roles


def _wallets_contacts(auth: _Auth) -> GrpcUserContacts:
    contacts = GrpcUserContacts(grpc.aio.insecure_channel("127.0.0.1:1"), _token, 1.0)
    contacts._roles._stub = auth  # type: ignore[assignment]
    return contacts


async def test_the_owners_role_is_auths_answer() -> None:
    auth = _Auth(role_pb2.ROLE_MODERATOR)
    assert await _roles(auth).role_of("u1") is Role.MODERATOR
    assert auth.asked == ["u1"]


async def test_an_empty_user_id_is_a_callers_bug_never_sent_to_auth() -> None:
    """Not AUTH_UNAVAILABLE: auth is not at fault, and blaming it hid the empty id."""
    auth = _Auth()
    with pytest.raises(ValueError, match="without a user id"):
        await _roles(auth).role_of("")
    assert auth.asked == []


@pytest.mark.parametrize(
    ("auth", "token"),
    [
        (_Auth(failure=ConnectionError("auth is down")), _token),
        (_Auth(role=role_pb2.ROLE_UNSPECIFIED), _token),  # an auth older than the field
        (_Auth(role=99), _token),  # a role this build does not know
        (_Auth(), _no_token),  # no service token to call with
    ],
    ids=["down", "no-role", "unknown-role", "no-token"],
)
async def test_no_role_in_the_answer_is_auth_unavailable(auth: _Auth, token: Any) -> None:
    with pytest.raises(UnavailableError) as err:
        await _roles(auth, token).role_of("u1")
    assert (err.value.kind, err.value.reason) == (ErrorKind.UNAVAILABLE, "AUTH_UNAVAILABLE")


async def test_wallets_contacts_answer_roles_by_the_same_rule() -> None:
    assert await _wallets_contacts(_Auth(role_pb2.ROLE_MODERATOR)).role_of("u1") is Role.MODERATOR
    with pytest.raises(UnavailableError):
        await _wallets_contacts(_Auth(role_pb2.ROLE_UNSPECIFIED)).role_of("u1")
