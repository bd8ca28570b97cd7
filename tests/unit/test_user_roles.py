"""A user's role from auth's GetUserRole (wallet's staff actions, kyc's decisions), which
carries nothing but the role: any answer but a role is AUTH_UNAVAILABLE, so an action whose
rank cannot be checked fails closed. Wallet's mail alone still asks GetUserContact."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from grpc.aio import AioRpcError, Metadata

from vaultpay.auth.v1 import auth_pb2
from vaultpay.type.v1 import role_pb2
from vaultpay_common.context import Role
from vaultpay_common.errors import ErrorKind, UnavailableError
from vaultpay_common.grpc.auth_client import AuthUnavailableError
from vaultpay_common.grpc.user_roles import GrpcUserRoles
from vaultpay_wallet.adapters.peers import GrpcUserContacts, UserContact


class _Auth:
    """A stand-in for auth's internal stub: GetUserRole answers `role`, GetUserContact a
    contact (without a role), or either raises `failure`. `calls` records (rpc, user id)."""

    def __init__(self, role: int = role_pb2.ROLE_ADMIN, failure: Exception | None = None) -> None:
        self.role = role_pb2.Role.ValueType(role)
        self.failure = failure
        self.calls: list[tuple[str, str]] = []

    @property
    def asked(self) -> list[str]:
        return [user_id for _, user_id in self.calls]

    async def GetUserRole(self, request: Any, **kwargs: Any) -> Any:
        self.calls.append(("GetUserRole", request.user_id))
        if self.failure is not None:
            raise self.failure
        return auth_pb2.GetUserRoleResponse(role=self.role)

    async def GetUserContact(self, request: Any, **kwargs: Any) -> Any:
        self.calls.append(("GetUserContact", request.user_id))
        if self.failure is not None:
            raise self.failure
        return auth_pb2.GetUserContactResponse(email="a@example.com", full_name="A", active=True)


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
    contacts._stub = auth  # type: ignore[assignment]
    contacts._roles._stub = auth  # type: ignore[assignment]
    return contacts


async def test_the_owners_role_is_auths_answer_to_get_user_role_alone() -> None:
    """Least privilege: a rank check never asks for the user's contact (email, name)."""
    auth = _Auth(role_pb2.ROLE_MODERATOR)
    assert await _roles(auth).role_of("u1") is Role.MODERATOR
    assert auth.calls == [("GetUserRole", "u1")]


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


async def test_wallet_asks_the_contact_for_mail_and_the_role_for_a_rank_check() -> None:
    auth = _Auth(role_pb2.ROLE_MODERATOR)
    contacts = _wallets_contacts(auth)
    assert await contacts.contact("u1") == UserContact("a@example.com", "A", True)
    assert await contacts.role_of("u2") is Role.MODERATOR
    assert auth.calls == [("GetUserContact", "u1"), ("GetUserRole", "u2")]


class _AuthBeforeGetUserRole(_Auth):
    """An auth of the release before GetUserRole (rolled back to, or not upgraded yet): the
    method is UNIMPLEMENTED, and its GetUserContact answers the role too."""

    async def GetUserRole(self, request: Any, **kwargs: Any) -> Any:
        self.calls.append(("GetUserRole", request.user_id))
        raise AioRpcError(grpc.StatusCode.UNIMPLEMENTED, Metadata(), Metadata(), "unknown")

    async def GetUserContact(self, request: Any, **kwargs: Any) -> Any:
        contact = await super().GetUserContact(request, **kwargs)
        contact.role = self.role
        return contact


async def test_an_auth_without_get_user_role_is_asked_its_contacts_role() -> None:
    """Wallet and kyc deploy before auth, and survive auth's rollback: no outage of the
    staff actions while the releases differ."""
    auth = _AuthBeforeGetUserRole(role_pb2.ROLE_MODERATOR)
    assert await _roles(auth).role_of("u1") is Role.MODERATOR
    assert auth.calls == [("GetUserRole", "u1"), ("GetUserContact", "u1")]


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED],
)
async def test_any_other_refusal_of_get_user_role_fails_closed_without_the_contact(
    code: grpc.StatusCode,
) -> None:
    auth = _Auth(failure=AioRpcError(code, Metadata(), Metadata(), "no"))
    with pytest.raises(AuthUnavailableError):
        await _roles(auth).role_of("u1")
    assert auth.calls == [("GetUserRole", "u1")]
