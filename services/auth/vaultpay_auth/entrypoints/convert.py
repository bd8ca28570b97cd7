"""proto <-> domain conversion for the auth service."""

from __future__ import annotations

from vaultpay.auth.v1 import auth_pb2
from vaultpay.type.v1 import role_pb2
from vaultpay_auth.domain.model import User
from vaultpay_auth.service_layer.accounts import IssuedTokens
from vaultpay_common.context import Role
from vaultpay_common.grpc.convert import timestamp

__all__ = [
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
