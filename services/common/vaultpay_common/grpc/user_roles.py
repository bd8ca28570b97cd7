"""A user's current role, asked of auth: the rank rule of staff actions in wallet and kyc.

    roles = GrpcUserRoles(channel, service_token, timeout=2.0, whose="wallet owner")
    role = await roles.role_of(user_id)  # Role, or AuthUnavailableError
    role, active = await roles.standing_of(user_id)  # and whether auth still has them active

It asks AuthInternalService.GetUserRole with the caller's service identity (the method's
access rule names the services that may), which answers the role and nothing else about the
user (no email or name crosses for a rank check), from auth's database, never from a token.
An auth older than GetUserRole (UNIMPLEMENTED: rolled back, or not upgraded yet, since wallet
and kyc deploy first) is asked its GetUserContact, whose role field that release fills and
whose rule lets both services ask. Every other failure is AUTH_UNAVAILABLE, so an action whose
rank cannot be checked fails closed: auth down or too slow, our own service token not to be
had, an answer without a role or with one this build does not know, a user unknown to auth. No
answer is taken as "a user". `standing_of` also needs the answer to say whether the user is
active (an auth older than that field says nothing: AUTH_UNAVAILABLE); no answer is taken as
"active".
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

__all__ = ["GrpcUserRoles"]

log = logging.getLogger(__name__)

TokenSource = Callable[[], Awaitable[str]]


class GrpcUserRoles:
    """`role_of(user_id)` over auth's GetUserRole; `whose` names the user in logs and
    errors ("wallet owner", "kyc submission's owner")."""

    def __init__(
        self, channel: grpc.aio.Channel, token: TokenSource, timeout: float, *, whose: str
    ) -> None:
        self._stub = auth_pb2_grpc.AuthInternalServiceStub(channel)
        self._token = token
        self._timeout = timeout
        self._whose = whose

    async def role_of(self, user_id: str) -> Role:
        role, _ = await self._lookup(user_id)
        return role

    async def standing_of(self, user_id: str) -> tuple[Role, bool]:
        """The role and whether the user is active (kyc's approvals)."""
        role, active = await self._lookup(user_id)
        if active is None:
            raise AuthUnavailableError(f"auth did not say whether the {self._whose} is active")
        return role, active

    async def _lookup(self, user_id: str) -> tuple[Role, bool | None]:
        if not user_id:
            # A caller's bug (no one to ask about), not auth's failure: never sent to auth.
            raise ValueError(f"the {self._whose}'s role was asked without a user id")
        try:
            answered, active = await self._ask(user_id)
            role = role_from_proto(answered)
        except AuthUnavailableError:  # our own service token could not be had
            raise
        except Exception as exc:
            log.warning(
                "a user's role unknown",
                extra={"peer": "auth", "whose": self._whose, "error": type(exc).__name__},
            )
            raise AuthUnavailableError(f"auth could not tell the {self._whose}'s role") from exc
        if role is None:
            raise AuthUnavailableError(f"auth answered without the {self._whose}'s role")
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
        # An auth older than GetUserRole (rolled back, or not upgraded yet: wallet and kyc
        # go first): its GetUserContact carries the role and the state (always set there),
        # and it lets wallet and kyc ask.
        contact: auth_pb2.GetUserContactResponse = await self._stub.GetUserContact(
            auth_pb2.GetUserContactRequest(user_id=user_id),
            metadata=metadata,
            timeout=self._timeout,
        )
        return contact.role, contact.active
