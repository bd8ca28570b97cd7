"""Wallets, freezes, PINs, PIN reset tokens, limit overrides and system settings.

Grants: the app role reads and writes wallets (never DELETE: a wallet is closed, not
removed), may only UPDATE system_settings (keys come from migrations) and only INSERT/SELECT
the setting history, which is append-only for it. The balance can never go negative.

Revision ID: w0001
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import context, op

from vaultpay_common.migrations import refuse_to_drop_rows
from vaultpay_wallet.domain.settings_catalog import SETTINGS

revision = "w0001"
down_revision = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    app_role = context.config.attributes["app_role"]
    op.create_table(
        "wallets",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text, nullable=False, unique=True),
        sa.Column("display_name", sa.Text, nullable=False),
        sa.Column("currency", sa.Text, nullable=False),
        sa.Column("balance", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("kyc_tier", sa.Text, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("closed_at", _TS),
        sa.CheckConstraint("id ~ '^VPY-[A-Z0-9]{6}$'", name="wallets_id_format"),
        sa.CheckConstraint("balance >= 0", name="wallets_balance_not_negative"),
        sa.CheckConstraint("status IN ('ACTIVE', 'FROZEN', 'CLOSED')", name="wallets_status_valid"),
        sa.CheckConstraint("kyc_tier IN ('NONE', 'BASIC', 'FULL')", name="wallets_kyc_tier_valid"),
        sa.CheckConstraint("currency ~ '^[A-Z]{3}$'", name="wallets_currency_format"),
        sa.CheckConstraint(
            "(status = 'CLOSED') = (closed_at IS NOT NULL)",
            name="wallets_closed_at_iff_closed",
        ),
    )
    op.create_index("wallets_created_idx", "wallets", ["created_at", "id"])
    op.create_index("wallets_status_idx", "wallets", ["status"])

    op.create_table(
        "wallet_freezes",
        sa.Column("wallet_id", sa.Text, sa.ForeignKey("wallets.id"), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("note", sa.Text, nullable=False, server_default=""),
        sa.Column("frozen_at", _TS, nullable=False),
        sa.Column("until", _TS),
        sa.Column("set_by", sa.Text, nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("wallet_id", "source", name="wallet_freezes_pkey"),
        sa.CheckConstraint(
            "source IN ('SELF', 'ADMIN', 'PIN_LOCKOUT')", name="wallet_freezes_source"
        ),
    )
    op.create_index(
        "wallet_freezes_until_idx",
        "wallet_freezes",
        ["until"],
        postgresql_where=sa.text("until IS NOT NULL"),
    )

    op.create_table(
        "wallet_pins",
        sa.Column("wallet_id", sa.Text, sa.ForeignKey("wallets.id"), primary_key=True),
        sa.Column("pin_hash", sa.Text, nullable=False),
        sa.Column("failed_attempts", sa.SmallInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("last_attempt_at", _TS),
        sa.CheckConstraint(
            "failed_attempts BETWEEN 0 AND 3", name="wallet_pins_failed_attempts_range"
        ),
    )

    op.create_table(
        "pin_reset_tokens",
        sa.Column("token_hash", sa.Text, primary_key=True),
        sa.Column("wallet_id", sa.Text, sa.ForeignKey("wallets.id"), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("used_at", _TS),
    )
    op.create_index(
        "pin_reset_tokens_wallet_idx",
        "pin_reset_tokens",
        ["wallet_id"],
        postgresql_where=sa.text("used_at IS NULL"),
    )

    op.create_table(
        "wallet_limit_overrides",
        sa.Column("position", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("wallet_id", sa.Text, sa.ForeignKey("wallets.id"), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("per_transaction", sa.BigInteger),
        sa.Column("daily", sa.BigInteger),
        sa.Column("monthly", sa.BigInteger),
        sa.Column("set_by", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("updated_at", _TS, nullable=False),
        sa.UniqueConstraint("wallet_id", "source", "action", name="wallet_limit_overrides_key"),
        sa.CheckConstraint(
            "source IN ('ADMIN_OVERRIDE', 'USER')", name="wallet_limit_overrides_source"
        ),
        sa.CheckConstraint(
            "action IN ('send', 'withdraw', 'top_up')", name="wallet_limit_overrides_action"
        ),
        sa.CheckConstraint(
            "coalesce(per_transaction, 1) > 0 AND coalesce(daily, 1) > 0 "
            "AND coalesce(monthly, 1) > 0",
            name="wallet_limit_overrides_positive",
        ),
    )
    op.create_index(
        "wallet_limit_overrides_recent_idx", "wallet_limit_overrides", ["updated_at", "position"]
    )

    settings = op.create_table(
        "system_settings",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
        sa.Column("updated_by", sa.Text, nullable=False),
    )
    op.create_table(
        "system_setting_changes",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("key", sa.Text, sa.ForeignKey("system_settings.key"), nullable=False),
        sa.Column("old_value", sa.Text, nullable=False),
        sa.Column("new_value", sa.Text, nullable=False),
        sa.Column("changed_by", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("changed_at", _TS, nullable=False),
    )
    seeded_at = datetime.now(UTC)
    op.bulk_insert(
        settings,
        [
            {
                "key": spec.key,
                "value": spec.default,
                "updated_at": seeded_at,
                "updated_by": "system",
            }
            for spec in SETTINGS.values()
        ],
    )

    op.execute(f'GRANT USAGE ON SCHEMA public TO "{app_role}"')
    op.execute(f'GRANT SELECT, INSERT, UPDATE ON wallets, wallet_pins TO "{app_role}"')
    op.execute(
        "GRANT SELECT, INSERT, UPDATE, DELETE ON wallet_freezes, pin_reset_tokens, "
        f'wallet_limit_overrides TO "{app_role}"'
    )
    op.execute(f'GRANT SELECT, UPDATE ON system_settings TO "{app_role}"')
    op.execute(f'GRANT SELECT, INSERT ON system_setting_changes TO "{app_role}"')


def downgrade() -> None:
    refuse_to_drop_rows(
        "wallets",
        "wallet_freezes",
        "wallet_pins",
        "pin_reset_tokens",
        "wallet_limit_overrides",
        "system_setting_changes",
    )
    for table in (
        "system_setting_changes",
        "system_settings",
        "wallet_limit_overrides",
        "pin_reset_tokens",
        "wallet_pins",
        "wallet_freezes",
        "wallets",
    ):
        op.drop_table(table)
