"""Users, sessions, refresh tokens, signing keys and the append-only audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import JSONB, UUID

from vaultpay_common.audit import audit_table_ddl
from vaultpay_common.migrations import refuse_to_drop_rows

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    app_role = context.config.attributes["app_role"]
    op.create_table(
        "users",
        sa.Column("id", UUID(as_uuid=False), primary_key=True),
        sa.Column("email", sa.Text, nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("full_name", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("deactivation_reason", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", _TS, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", _TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint(
            "role IN ('USER', 'MODERATOR', 'ADMIN', 'SUPER_ADMIN')", name="users_role_valid"
        ),
        sa.CheckConstraint("email = lower(email)", name="users_email_normalised"),
    )
    op.create_index("users_email_key", "users", ["email"], unique=True)
    op.create_index("users_created_idx", "users", ["created_at", "id"])
    op.create_table(
        "sessions",
        sa.Column("id", UUID(as_uuid=False), primary_key=True),
        sa.Column("user_id", UUID(as_uuid=False), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("revoked_at", _TS),
        sa.Column("revoke_reason", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("sessions_user_idx", "sessions", ["user_id"])
    op.create_table(
        "refresh_tokens",
        sa.Column("token_hash", sa.Text, primary_key=True),
        sa.Column("session_id", UUID(as_uuid=False), sa.ForeignKey("sessions.id"), nullable=False),
        sa.Column("user_id", UUID(as_uuid=False), sa.ForeignKey("users.id"), nullable=False),
        sa.Column("created_at", _TS, nullable=False, server_default=sa.func.now()),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("used_at", _TS),
    )
    op.create_index("refresh_tokens_session_idx", "refresh_tokens", ["session_id"])
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.Text, primary_key=True),
        sa.Column("private_key_encrypted", sa.LargeBinary, nullable=False),
        sa.Column("public_key_x", sa.Text, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("retired_at", _TS),
    )
    op.create_table(
        "audit_events",
        sa.Column("sequence", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("actor_id", sa.Text, nullable=False),
        sa.Column("actor_role", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("target_type", sa.Text, nullable=False),
        sa.Column("target_id", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("details", JSONB, nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("row_hash", sa.String(64), nullable=False),
    )
    for statement in audit_table_ddl(app_role):
        op.execute(statement)
    op.execute(f'GRANT USAGE ON SCHEMA public TO "{app_role}"')
    op.execute(
        "GRANT SELECT, INSERT, UPDATE ON users, sessions, refresh_tokens, signing_keys "
        f'TO "{app_role}"'
    )


def downgrade() -> None:
    refuse_to_drop_rows("users", "sessions", "refresh_tokens", "signing_keys", "audit_events")
    for table in ("audit_events", "signing_keys", "refresh_tokens", "sessions", "users"):
        op.drop_table(table)
    op.execute("DROP FUNCTION IF EXISTS audit_events_refuse_change()")
