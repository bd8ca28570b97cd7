"""kyc's client of auth for the review rules: a submission owner's role, and whether auth still
has them active, through the platform's `GrpcUserRoles` (its failure rules: every failure is
AUTH_UNAVAILABLE, no answer is taken as "a user" nor as "active").

    owners = GrpcOwnerStandings(channel, service_token, timeout=2.0)
    role = await owners.role_of(user_id)  # the rank rule of rejections and views
    standing = await owners.standing_of(user_id)  # an approval: the rank rule and the state
"""

from __future__ import annotations

import grpc

from vaultpay_common.context import Role
from vaultpay_common.grpc.user_roles import GrpcUserRoles, TokenSource
from vaultpay_kyc.service_layer.ports import UserStanding

__all__ = ["GrpcOwnerStandings"]


class GrpcOwnerStandings:
    """`role_of` and `standing_of` (`UserRoleSource`) of a submission's owner."""

    def __init__(self, channel: grpc.aio.Channel, token: TokenSource, timeout: float) -> None:
        self._roles = GrpcUserRoles(channel, token, timeout, whose="kyc submission's owner")

    async def role_of(self, user_id: str) -> Role:
        return await self._roles.role_of(user_id)

    async def standing_of(self, user_id: str) -> UserStanding:
        role, active = await self._roles.standing_of(user_id)
        return UserStanding(role, active)
