"""The auth database's tables (SQLAlchemy Core). Alembic migrations create them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    MetaData,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import UUID

from vaultpay_common.audit import audit_tables
from vaultpay_common.audit.tables import XID8

__all__ = [
    "audit_events",
    "audit_seals",
    "metadata",
    "refresh_tokens",
    "session_revocations",
    "sessions",
    "signing_keys",
    "users",
]

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("email", Text, nullable=False),
    Column("password_hash", Text, nullable=False),
    Column("full_name", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("active", Boolean, nullable=False, server_default="true"),
    Column("deactivation_reason", Text, nullable=False, server_default=""),
    # Who deactivated the user (0010); NULL while active, or not on record.
    Column("deactivated_by", UUID(as_uuid=False), ForeignKey("users.id")),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    CheckConstraint(
        "role IN ('USER', 'MODERATOR', 'ADMIN', 'SUPER_ADMIN')", name="users_role_valid"
    ),
    CheckConstraint("email = lower(email)", name="users_email_normalised"),
    Index("users_email_key", "email", unique=True),
    Index("users_created_idx", "created_at", "id"),
    # auth 0011: ListUsers' rare filters, newest first (the repository states these WHEREs).
    Index(
        "users_staff_created_idx",
        "created_at",
        "id",
        postgresql_where=text("role IN ('MODERATOR', 'ADMIN', 'SUPER_ADMIN')"),
    ),
    Index("users_inactive_created_idx", "created_at", "id", postgresql_where=text("NOT active")),
)
# auth 0011: ListUsers' email prefix, a range in code point order whatever the collation.
Index("users_email_c_idx", users.c.email.collate("C"))

sessions = Table(
    "sessions",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("user_id", UUID(as_uuid=False), ForeignKey("users.id"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True)),
    Column("revoke_reason", Text, nullable=False, server_default=""),
    Index("sessions_user_idx", "user_id"),
    # auth 0007: what revoking every session of a user reads (its sessions not revoked).
    Index("sessions_live_user_idx", "user_id", postgresql_where=text("revoked_at IS NULL")),
)
# auth 0007: when a session ended (LEAST ignores a NULL revoked_at); the cleanup job reads it.
Index("sessions_ended_idx", func.least(sessions.c.expires_at, sessions.c.revoked_at))

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("token_hash", Text, primary_key=True),
    Column("session_id", UUID(as_uuid=False), ForeignKey("sessions.id"), nullable=False),
    Column("user_id", UUID(as_uuid=False), ForeignKey("users.id"), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True)),
    Index("refresh_tokens_session_idx", "session_id"),
)

signing_keys = Table(
    "signing_keys",
    metadata,
    Column("kid", Text, primary_key=True),
    # nonce || AES-256-GCM ciphertext of the raw Ed25519 private key, AAD = kid.
    Column("private_key_encrypted", LargeBinary, nullable=False),
    Column("public_key_x", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Published in the JWKS from creation; signs from not_before until retired_at.
    Column("not_before", DateTime(timezone=True), nullable=False),
    Column("retired_at", DateTime(timezone=True)),
    # When an operator withdrew it (retired_at is then set far in the past); NULL: never.
    Column("withdrawn_at", DateTime(timezone=True)),
)

# The revocation feed (sql/revocations.sql creates it, with the trigger on `sessions` that
# writes it; adapters/revocations.py reads it).
session_revocations = Table(
    "session_revocations",
    metadata,
    Column("sequence", BigInteger, primary_key=True),
    Column("xact_id", XID8, nullable=False),
    Column("session_id", UUID(as_uuid=False), nullable=False),
    Column("user_id", UUID(as_uuid=False), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=False),
    Column("reason", Text, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
    Index("session_revocations_xact_idx", "xact_id", "sequence"),
    Index("session_revocations_recorded_idx", "recorded_at"),
)

audit_events, audit_seals = audit_tables(metadata)
