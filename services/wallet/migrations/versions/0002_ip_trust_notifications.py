"""IP trust (trusted addresses, pending confirmations) and the notification inbox.

No table holds a client address or a confirmation token: only their keyed HMAC / SHA-256.

Revision ID: w0002
Revises: w0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import UUID

from vaultpay_common.migrations import refuse_to_drop_rows

revision = "w0002"
down_revision = "w0001"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)
_HEX64 = "ip_hash ~ '^[0-9a-f]{64}$'"


def upgrade() -> None:
    app_role = context.config.attributes["app_role"]
    op.create_table(
        "trusted_ips",
        sa.Column("user_id", UUID(as_uuid=False), nullable=False),
        sa.Column("ip_hash", sa.Text, nullable=False),
        sa.Column("first_seen_at", _TS, nullable=False),
        sa.Column("last_seen_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("user_id", "ip_hash", name="trusted_ips_pkey"),
        sa.CheckConstraint(_HEX64, name="trusted_ips_hash_hex"),
    )
    op.create_index(
        "trusted_ips_user_seen_idx", "trusted_ips", ["user_id", "last_seen_at", "ip_hash"]
    )
    op.create_table(
        "ip_confirmations",
        sa.Column("user_id", UUID(as_uuid=False), nullable=False),
        sa.Column("ip_hash", sa.Text, nullable=False),
        sa.Column("token_hash", sa.Text, nullable=False),
        sa.Column("request_id", sa.Text, nullable=False),
        sa.Column("sent_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("used_at", _TS),
        sa.PrimaryKeyConstraint("user_id", "ip_hash", name="ip_confirmations_pkey"),
        sa.CheckConstraint(_HEX64, name="ip_confirmations_hash_hex"),
    )
    op.create_index("ip_confirmations_token_key", "ip_confirmations", ["token_hash"], unique=True)
    op.create_table(
        "notifications",
        sa.Column("id", UUID(as_uuid=False), primary_key=True),
        sa.Column("user_id", UUID(as_uuid=False), nullable=False),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("read", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("read_at", _TS),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("dedupe_key", sa.Text, nullable=False),
        sa.CheckConstraint(
            "char_length(title) BETWEEN 1 AND 120", name="notifications_title_length"
        ),
        sa.CheckConstraint("char_length(body) <= 1000", name="notifications_body_length"),
        sa.CheckConstraint(
            "char_length(dedupe_key) BETWEEN 1 AND 200", name="notifications_dedupe_key"
        ),
        sa.CheckConstraint(
            "kind IN ('MONEY_RECEIVED', 'MONEY_SENT', 'TOP_UP', 'WITHDRAWAL', 'REFUND', "
            "'DISPUTE', 'KYC', 'WALLET_STATUS', 'SECURITY')",
            name="notifications_kind_valid",
        ),
    )
    op.create_index(
        "notifications_user_dedupe_key", "notifications", ["user_id", "dedupe_key"], unique=True
    )
    op.create_index(
        "notifications_user_created_idx", "notifications", ["user_id", "created_at", "id"]
    )
    op.create_index(
        "notifications_user_unread_idx",
        "notifications",
        ["user_id", "created_at", "id"],
        postgresql_where=sa.text("NOT read"),
    )
    op.execute(f'GRANT USAGE ON SCHEMA public TO "{app_role}"')
    op.execute(
        f'GRANT SELECT, INSERT, UPDATE, DELETE ON trusted_ips, ip_confirmations TO "{app_role}"'
    )
    # No DELETE on the inbox for the app: a retention job would get its own grant.
    op.execute(f'GRANT SELECT, INSERT, UPDATE ON notifications TO "{app_role}"')


def downgrade() -> None:
    refuse_to_drop_rows("notifications", "ip_confirmations", "trusted_ips")
    for table in ("notifications", "ip_confirmations", "trusted_ips"):
        op.drop_table(table)
