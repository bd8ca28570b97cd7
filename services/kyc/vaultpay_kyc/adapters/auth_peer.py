"""kyc's client of auth for the review rules: a submission owner's role, and whether auth still
has them active.

    owners = GrpcOwnerStandings(channel, service_token, timeout=2.0)
    role = await owners.role_of(user_id)  # the rank rule of rejections and views
    standing = await owners.standing_of(user_id)  # an approval: the rank rule and the state

Both ask AuthInternalService.GetUserRole with kyc's service identity, which answers the role
and the state and nothing else about the user (no email or name crosses), from auth's
database, never from a token. An auth older than GetUserRole (UNIMPLEMENTED: rolled back, or
not upgraded yet) is asked its GetUserContact, whose role and `active` fields that release
fills and whose rule lets kyc ask. Every other failure is AUTH_UNAVAILABLE, so a review whose
rules cannot be checked fails closed: auth down or too slow, our own service token not to be
had, an answer without a role or with one this build does not know, a user unknown to auth;
and for `standing_of`, an answer that does not say whether the user is active (an auth older
than the field). No answer is taken as "a user", nor as "active".

wallet asks the role alone (`vaultpay_common.grpc.user_roles`), under the same rules.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import grpc

from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc
from vaultpay.type.v1 import role_pb2
from vaultpay_common.context import Role
from vaultpay_common.grpc.auth_client import outgoing_metadata
from vaultpay_common.grpc.convert import role_from_proto
from vaultpay_common.grpc.tokens import AuthUnavailableError
from vaultpay_kyc.service_layer.ports import UserStanding

__all__ = ["GrpcOwnerStandings"]

log = logging.getLogger(__name__)

TokenSource = Callable[[], Awaitable[str]]
_WHOSE = "kyc submission's owner"


class GrpcOwnerStandings:
    """`role_of` and `standing_of` over auth's GetUserRole (`UserRoleSource`)."""

    def __init__(self, channel: grpc.aio.Channel, token: TokenSource, timeout: float) -> None:
        self._stub = auth_pb2_grpc.AuthInternalServiceStub(channel)
        self._token = token
        self._timeout = timeout

    async def role_of(self, user_id: str) -> Role:
        role, _ = await self._lookup(user_id)
        return role

    async def standing_of(self, user_id: str) -> UserStanding:
        role, active = await self._lookup(user_id)
        if active is None:
            raise AuthUnavailableError(f"auth did not say whether the {_WHOSE} is active")
        return UserStanding(role, active)

    async def _lookup(self, user_id: str) -> tuple[Role, bool | None]:
        if not user_id:
            # A caller's bug (no one to ask about), not auth's failure: never sent to auth.
            raise ValueError(f"the {_WHOSE}'s role was asked without a user id")
        try:
            answered, active = await self._ask(user_id)
            role = role_from_proto(answered)
        except AuthUnavailableError:  # our own service token could not be had
            raise
        except Exception as exc:
            log.warning(
                "a user's role unknown",
                extra={"peer": "auth", "whose": _WHOSE, "error": type(exc).__name__},
            )
            raise AuthUnavailableError(f"auth could not tell the {_WHOSE}'s role") from exc
        if role is None:
            raise AuthUnavailableError(f"auth answered without the {_WHOSE}'s role")
        return role, active

    async def _ask(self, user_id: str) -> tuple[role_pb2.Role.ValueType, bool | None]:
        """The role and, when the answer carries it, whether the user is active."""
        metadata = outgoing_metadata(await self._token())
        try:
            reply: auth_pb2.GetUserRoleResponse = await self._stub.GetUserRole(
                auth_pb2.GetUserRoleRequest(user_id=user_id),
                metadata=metadata,
                timeout=self._timeout,
            )
            return reply.role, reply.active if reply.HasField("active") else None
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
        # An auth older than GetUserRole (rolled back, or not upgraded yet): its
        # GetUserContact carries the role and the state (always set there), and lets kyc ask.
        contact: auth_pb2.GetUserContactResponse = await self._stub.GetUserContact(
            auth_pb2.GetUserContactRequest(user_id=user_id),
            metadata=metadata,
            timeout=self._timeout,
        )
        return contact.role, contact.active
