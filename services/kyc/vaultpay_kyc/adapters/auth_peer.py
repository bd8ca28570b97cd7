"""kyc's client of auth: a submission owner's current role, for the rank rule of reviews.

It asks AuthInternalService.GetUserContact with kyc's service identity (the method's access
rule names kyc among its callers) and keeps only the role: the role comes from auth's
database, not from any token. Every failure is AUTH_UNAVAILABLE, so a review whose rank cannot
be checked fails closed: auth down or too slow, our own service token not to be had, an answer
without a role (an older auth), the owner unknown to auth. wallet's client
(`GrpcUserContacts.role_of`) answers the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import grpc

from vaultpay.auth.v1 import auth_pb2, auth_pb2_grpc
from vaultpay_common.context import Role
from vaultpay_common.grpc.auth_client import outgoing_metadata
from vaultpay_common.grpc.convert import role_from_proto
from vaultpay_common.grpc.tokens import AuthUnavailableError

__all__ = ["GrpcUserRoles"]

log = logging.getLogger(__name__)

TokenSource = Callable[[], Awaitable[str]]


class GrpcUserRoles:
    """`UserRoleSource` over auth's GetUserContact."""

    def __init__(self, channel: grpc.aio.Channel, token: TokenSource, timeout: float) -> None:
        self._stub = auth_pb2_grpc.AuthInternalServiceStub(channel)
        self._token = token
        self._timeout = timeout

    async def role_of(self, user_id: str) -> Role:
        try:
            reply: auth_pb2.GetUserContactResponse = await self._stub.GetUserContact(
                auth_pb2.GetUserContactRequest(user_id=user_id),
                metadata=outgoing_metadata(await self._token()),
                timeout=self._timeout,
            )
            role = role_from_proto(reply.role)
        except AuthUnavailableError:  # our own service token could not be had
            raise
        except Exception as exc:
            log.warning(
                "role of a kyc submission's owner unknown",
                extra={"peer": "auth", "error": type(exc).__name__},
            )
            raise AuthUnavailableError("auth could not tell the submission owner's role") from exc
        if role is None:
            raise AuthUnavailableError("auth answered without the submission owner's role")
        return role
