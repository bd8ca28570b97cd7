"""proto <-> domain conversion for the auth service."""

from __future__ import annotations

from vaultpay.auth.v1 import auth_pb2
from vaultpay.type.v1 import role_pb2
from vaultpay_auth.domain.model import User
from vaultpay_auth.domain.revocations import FeedPage, RevokedSession, inactive_reason_of
from vaultpay_auth.service_layer.accounts import IssuedTokens
from vaultpay_common.context import Role
from vaultpay_common.grpc.convert import duration, timestamp

__all__ = [
    "INACTIVE_REASONS",
    "feed_page_to_proto",
    "role_to_proto",
    "token_pair_to_proto",
    "user_to_proto",
]


def role_to_proto(role: Role | None) -> role_pb2.Role.ValueType:
    return role_pb2.Role.ValueType(int(role) if role is not None else 0)


def user_to_proto(user: User) -> auth_pb2.User:
    return auth_pb2.User(
        user_id=user.id,
        email=user.email,
        full_name=user.full_name,
        role=role_to_proto(user.role),
        active=user.active,
        deactivation_reason=user.deactivation_reason,
        create_time=timestamp(user.created_at),
        update_time=timestamp(user.updated_at),
    )


def token_pair_to_proto(tokens: IssuedTokens) -> auth_pb2.TokenPair:
    return auth_pb2.TokenPair(
        access_token=tokens.access_token,
        access_token_expire_time=timestamp(tokens.access_expires_at),
        refresh_token=tokens.refresh_token,
        refresh_token_expire_time=timestamp(tokens.refresh_expires_at),
        token_type="Bearer",  # noqa: S106 - the scheme name, not a secret
    )


# The UPPER_SNAKE reasons of the strict path as IntrospectToken and the feed report them.
INACTIVE_REASONS = {
    "TOKEN_INVALID": auth_pb2.INACTIVE_REASON_TOKEN_INVALID,
    "TOKEN_EXPIRED": auth_pb2.INACTIVE_REASON_TOKEN_EXPIRED,
    "TOKEN_REVOKED": auth_pb2.INACTIVE_REASON_TOKEN_REVOKED,
    "ACCOUNT_DISABLED": auth_pb2.INACTIVE_REASON_ACCOUNT_DISABLED,
}


def _revocation_to_proto(revoked: RevokedSession) -> auth_pb2.SessionRevocation:
    return auth_pb2.SessionRevocation(
        session_id=revoked.session_id,
        user_id=revoked.user_id,
        revoke_time=timestamp(revoked.revoked_at),
        reason=INACTIVE_REASONS[inactive_reason_of(revoked)],
    )


def feed_page_to_proto(page: FeedPage) -> auth_pb2.PollSessionRevocationsResponse:
    return auth_pb2.PollSessionRevocationsResponse(
        revocations=[_revocation_to_proto(r) for r in page.revocations],
        next_cursor=page.next_cursor.encode(),
        caught_up=page.caught_up,
        waited=duration(page.waited),
        withdrawn_key_ids=page.withdrawn_keys,
    )
