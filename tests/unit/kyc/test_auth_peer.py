"""kyc's client of auth (`GrpcOwnerStandings`): the owner's role, and for an approval whether
auth still has them active, from one GetUserRole. An answer that does not say whether the
owner is active (an auth older than the field) fails an approval closed, never "active"; the
rank rule of rejections and views does not need it."""

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
from vaultpay_kyc.adapters.auth_peer import GrpcOwnerStandings
from vaultpay_kyc.service_layer.ports import UserStanding


class _Auth:
    """A stand-in for auth's internal stub. GetUserRole answers `role` and `active` (left out
    when None: an auth older than the field), or raises `failure`; `before_get_user_role`
    makes it UNIMPLEMENTED, and GetUserContact (that release's) answers the role and state.
    `calls` records (rpc, user id)."""

    def __init__(
        self,
        role: int = role_pb2.ROLE_USER,
        active: bool | None = True,
        failure: Exception | None = None,
        *,
        before_get_user_role: bool = False,
    ) -> None:
        self.role = role_pb2.Role.ValueType(role)
        self.active = active
        self.failure = failure
        self.before_get_user_role = before_get_user_role
        self.calls: list[tuple[str, str]] = []

    async def GetUserRole(self, request: Any, **kwargs: Any) -> Any:
        self.calls.append(("GetUserRole", request.user_id))
        if self.before_get_user_role:
            raise AioRpcError(grpc.StatusCode.UNIMPLEMENTED, Metadata(), Metadata(), "unknown")
        if self.failure is not None:
            raise self.failure
        if self.active is None:
            return auth_pb2.GetUserRoleResponse(role=self.role)
        return auth_pb2.GetUserRoleResponse(role=self.role, active=self.active)

    async def GetUserContact(self, request: Any, **kwargs: Any) -> Any:
        self.calls.append(("GetUserContact", request.user_id))
        return auth_pb2.GetUserContactResponse(
            email="a@example.com", full_name="A", active=bool(self.active), role=self.role
        )


async def _token() -> str:
    return "service-token"


def _owners(auth: _Auth) -> GrpcOwnerStandings:
    owners = GrpcOwnerStandings(grpc.aio.insecure_channel("127.0.0.1:1"), _token, 1.0)
    owners._roles._stub = auth  # type: ignore[assignment]
    return owners


@pytest.mark.parametrize("active", [True, False])
async def test_the_owners_role_and_state_come_from_one_get_user_role(active: bool) -> None:
    auth = _Auth(role_pb2.ROLE_MODERATOR, active)
    assert await _owners(auth).standing_of("u1") == UserStanding(Role.MODERATOR, active)
    assert await _owners(auth).role_of("u1") is Role.MODERATOR
    assert auth.calls == [("GetUserRole", "u1")] * 2


async def test_an_answer_without_the_state_fails_an_approval_closed_not_a_rank_check() -> None:
    auth = _Auth(role_pb2.ROLE_USER, active=None)  # an auth older than the field
    with pytest.raises(UnavailableError) as err:
        await _owners(auth).standing_of("u1")
    assert (err.value.kind, err.value.reason) == (ErrorKind.UNAVAILABLE, "AUTH_UNAVAILABLE")
    assert await _owners(auth).role_of("u1") is Role.USER


@pytest.mark.parametrize(
    "auth",
    [
        _Auth(failure=ConnectionError("auth is down")),
        _Auth(failure=AioRpcError(grpc.StatusCode.NOT_FOUND, Metadata(), Metadata(), "no")),
        _Auth(role=role_pb2.ROLE_UNSPECIFIED),
        _Auth(role=99),
    ],
    ids=["down", "unknown-user", "no-role", "unknown-role"],
)
async def test_no_role_in_the_answer_is_auth_unavailable(auth: _Auth) -> None:
    for ask in (_owners(auth).standing_of, _owners(auth).role_of):
        with pytest.raises(AuthUnavailableError):
            await ask("u1")


@pytest.mark.parametrize("active", [True, False])
async def test_an_auth_without_get_user_role_is_asked_its_contacts_role_and_state(
    active: bool,
) -> None:
    auth = _Auth(role_pb2.ROLE_ADMIN, active, before_get_user_role=True)
    assert await _owners(auth).standing_of("u1") == UserStanding(Role.ADMIN, active)
    assert auth.calls == [("GetUserRole", "u1"), ("GetUserContact", "u1")]


async def test_an_empty_user_id_is_a_callers_bug_never_sent_to_auth() -> None:
    auth = _Auth()
    with pytest.raises(ValueError, match="without a user id"):
        await _owners(auth).standing_of("")
    assert auth.calls == []
