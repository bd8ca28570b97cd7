"""The wallet's own tables (SQLAlchemy Core), created by migration w0001.

`wallets` stays narrow because the transfer service locks and updates its rows inside the
ledger transaction (status check and balance); freezes, PINs and limits live beside it.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    PrimaryKeyConstraint,
    SmallInteger,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from vaultpay_wallet.adapters.metadata import metadata

__all__ = [
    "pin_reset_tokens",
    "system_setting_changes",
    "system_settings",
    "wallet_freezes",
    "wallet_limit_overrides",
    "wallet_pins",
    "wallets",
]

_TS = DateTime(timezone=True)

wallets = Table(
    "wallets",
    metadata,
    Column("id", Text, primary_key=True),
    Column("user_id", Text, nullable=False, unique=True),
    Column("display_name", Text, nullable=False),
    Column("currency", Text, nullable=False),
    Column("balance", BigInteger, nullable=False, server_default=text("0")),
    Column("status", Text, nullable=False),
    Column("kyc_tier", Text, nullable=False),
    Column("created_at", _TS, nullable=False),
    Column("updated_at", _TS, nullable=False),
    Column("closed_at", _TS),
    CheckConstraint("id ~ '^VPY-[A-Z0-9]{6}$'", name="wallets_id_format"),
    CheckConstraint("balance >= 0", name="wallets_balance_not_negative"),
    CheckConstraint("status IN ('ACTIVE', 'FROZEN', 'CLOSED')", name="wallets_status_valid"),
    CheckConstraint("kyc_tier IN ('NONE', 'BASIC', 'FULL')", name="wallets_kyc_tier_valid"),
    CheckConstraint("currency ~ '^[A-Z]{3}$'", name="wallets_currency_format"),
    CheckConstraint(
        "(status = 'CLOSED') = (closed_at IS NOT NULL)", name="wallets_closed_at_iff_closed"
    ),
    Index("wallets_created_idx", "created_at", "id"),
    Index("wallets_status_idx", "status"),
)

wallet_freezes = Table(
    "wallet_freezes",
    metadata,
    Column("wallet_id", Text, ForeignKey("wallets.id"), nullable=False),
    Column("source", Text, nullable=False),
    Column("note", Text, nullable=False, server_default=""),
    Column("frozen_at", _TS, nullable=False),
    Column("until", _TS),
    Column("set_by", Text, nullable=False, server_default=""),
    PrimaryKeyConstraint("wallet_id", "source", name="wallet_freezes_pkey"),
    CheckConstraint("source IN ('SELF', 'ADMIN', 'PIN_LOCKOUT')", name="wallet_freezes_source"),
    Index("wallet_freezes_until_idx", "until", postgresql_where=text("until IS NOT NULL")),
)

wallet_pins = Table(
    "wallet_pins",
    metadata,
    Column("wallet_id", Text, ForeignKey("wallets.id"), primary_key=True),
    Column("pin_hash", Text, nullable=False),
    Column("failed_attempts", SmallInteger, nullable=False, server_default=text("0")),
    Column("updated_at", _TS, nullable=False),
    Column("last_attempt_at", _TS),
    CheckConstraint("failed_attempts BETWEEN 0 AND 3", name="wallet_pins_failed_attempts_range"),
    # The stale-lock sweep's (w0009): used-up counters only, by their last attempt.
    Index(
        "wallet_pins_stale_lock_idx",
        "last_attempt_at",
        postgresql_where=text("failed_attempts >= 3"),
    ),
)

pin_reset_tokens = Table(
    "pin_reset_tokens",
    metadata,
    Column("token_hash", Text, primary_key=True),
    Column("wallet_id", Text, ForeignKey("wallets.id"), nullable=False),
    Column("created_at", _TS, nullable=False),
    Column("expires_at", _TS, nullable=False),
    Column("used_at", _TS),
    Index("pin_reset_tokens_wallet_idx", "wallet_id", postgresql_where=text("used_at IS NULL")),
    Index("pin_reset_tokens_expires_idx", "expires_at"),  # the retention's (w0009)
    # RequestPinReset's hourly count: one wallet's tokens by creation, used or not (w0013).
    Index("pin_reset_tokens_wallet_created_idx", "wallet_id", "created_at"),
)

wallet_limit_overrides = Table(
    "wallet_limit_overrides",
    metadata,
    Column("position", BigInteger, Identity(always=True), primary_key=True),
    Column("wallet_id", Text, ForeignKey("wallets.id"), nullable=False),
    Column("source", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("per_transaction", BigInteger),
    Column("daily", BigInteger),
    Column("monthly", BigInteger),
    Column("set_by", Text, nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("updated_at", _TS, nullable=False),
    UniqueConstraint("wallet_id", "source", "action", name="wallet_limit_overrides_key"),
    CheckConstraint("source IN ('ADMIN_OVERRIDE', 'USER')", name="wallet_limit_overrides_source"),
    CheckConstraint(
        "action IN ('send', 'withdraw', 'top_up')", name="wallet_limit_overrides_action"
    ),
    CheckConstraint(
        "coalesce(per_transaction, 1) > 0 AND coalesce(daily, 1) > 0 AND coalesce(monthly, 1) > 0",
        name="wallet_limit_overrides_positive",
    ),
    # The previous release's listing order: kept until no wallet of it runs (w0012).
    Index("wallet_limit_overrides_recent_idx", "updated_at", "position"),
    # AdminListLimits' filters, in its order (w0012).
    Index("wallet_limit_overrides_source_idx", "source", "position"),
    Index("wallet_limit_overrides_action_idx", "action", "position"),
    Index("wallet_limit_overrides_source_action_idx", "source", "action", "position"),
)

system_settings = Table(
    "system_settings",
    metadata,
    Column("key", Text, primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", _TS, nullable=False),
    Column("updated_by", Text, nullable=False),
)

system_setting_changes = Table(
    "system_setting_changes",
    metadata,
    Column("id", BigInteger, Identity(always=True), primary_key=True),
    Column("key", Text, ForeignKey("system_settings.key"), nullable=False),
    Column("old_value", Text, nullable=False),
    Column("new_value", Text, nullable=False),
    Column("changed_by", Text, nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("changed_at", _TS, nullable=False),
)
