"""wallet's tables and functions granted to wallet's own role.

The services of the shared database used to log in as one role. Now each may have its own
(`<SERVICE>_DATABASE_CHAIN_ROLES` at `migrate`): this revision moves what the wallet chain had
granted to the platform's role (the group every service's role is a member of) to wallet's, so
that transfer and kyc cannot read a PIN hash or write a wallet row. Where one role serves every
service, the two roles are one and nothing changes. The downgrade moves the grants back.

Revision ID: w0005
Revises: w0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import context, op

from vaultpay_common.migrations import move_privileges_ddl

revision = "w0005"
down_revision = "w0004"
branch_labels = None
depends_on = None

_TABLES = (
    "wallets",
    "wallet_pins",
    "wallet_freezes",
    "pin_reset_tokens",
    "wallet_limit_overrides",
    "system_settings",
    "system_setting_changes",
    "trusted_ips",
    "ip_confirmations",
    "notifications",
)
_FUNCTIONS = ("wallet_pin_reserve", "wallet_pin_settle_match", "wallet_pin_settle_movement")


def _move(from_role: str, to_role: str) -> None:
    for statement in move_privileges_ddl(
        tables=_TABLES, functions=_FUNCTIONS, from_role=from_role, to_role=to_role
    ):
        op.execute(statement)


def upgrade() -> None:
    app_role = context.config.attributes["app_role"]
    _move(context.config.attributes.get("shared_role", app_role), app_role)


def downgrade() -> None:
    app_role = context.config.attributes["app_role"]
    _move(app_role, context.config.attributes.get("shared_role", app_role))
