"""proto <-> domain conversion for the auth service."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from vaultpay.auth.v1 import auth_pb2
from vaultpay.type.v1 import role_pb2
from vaultpay_auth.domain.model import User
from vaultpay_auth.service_layer.accounts import IssuedTokens
from vaultpay_common.context import Role
from vaultpay_common.errors import ValidationError
from vaultpay_common.grpc.convert import timestamp

__all__ = [
    "after_from",
    "position_of",
    "role_to_proto",
    "sequence_from",
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


def position_of(user: User) -> dict[str, str]:
    return {"c": user.created_at.isoformat(), "i": user.id}


def after_from(position: dict[str, Any] | None) -> tuple[datetime, str] | None:
    """The keyset position a ListUsers page token carries, checked like any client input."""
    if position is None:
        return None
    try:
        created_at = datetime.fromisoformat(str(position["c"]))
        user_id = str(uuid.UUID(str(position["i"])))
    except (KeyError, ValueError) as exc:
        raise ValidationError.single("page_token", "is not a valid page token") from exc
    if created_at.tzinfo is None:
        raise ValidationError.single("page_token", "is not a valid page token")
    return created_at, user_id


def sequence_from(position: dict[str, Any] | None) -> int | None:
    """The audit sequence a ListAuthAuditEvents page token carries."""
    if position is None:
        return None
    sequence = position.get("s")
    if not isinstance(sequence, int) or isinstance(sequence, bool) or not 0 < sequence < 2**63:
        raise ValidationError.single("page_token", "is not a valid page token")
    return sequence
