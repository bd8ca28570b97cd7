"""The ledger's tables and functions granted to transfer's own role; transfer's crossing into
wallet's rows narrowed to the columns it reads.

The services of the shared database used to log in as one role. Now each may have its own
(`<SERVICE>_DATABASE_CHAIN_ROLES` at `migrate`): this revision moves what the transfer chain
had granted to the platform's role (the group every service's role is a member of) to
transfer's, so that wallet and kyc cannot call the money functions or read the ledger. Where
one role serves every service, the two roles are one and the move changes nothing.

What transfer's role still needs of wallet's tables is granted here, and nothing more: SELECT of
`wallets`' id, status, currency and balance (a movement's pre-check, a history's currency, the
ledger verifier). The money functions lock and update wallet rows as the owner (SECURITY
DEFINER), as before; `transfer_caps`, which they call and which reads wallet's settings, is no
longer executable by transfer's role (which could not run it anyway). t0003's trigger on
`wallets`, which refuses to close a wallet whose withdrawal is still being paid out, reads
`wallet_transactions`: it now runs as the owner too (SECURITY DEFINER), so wallet's role
closing a wallet needs no privilege on the ledger.

The downgrade moves the grants back, revokes the column grant, grants `transfer_caps` again and
makes the trigger's function SECURITY INVOKER again.

Revision ID: t0007
Revises: t0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import context, op

from vaultpay_common.migrations import move_privileges_ddl

revision = "t0007"
down_revision = "t0006"
branch_labels = None
depends_on = None

_TABLES = (
    "ledger_transactions",
    "ledger_postings",
    "wallet_transactions",
    "top_up_payments",
    "payouts",
    "limit_usage",
)
_FUNCTIONS = (
    "transfer_caps",
    "transfer_lease_payouts",
    "transfer_return_payout",
    "transfer_send_money",
    "transfer_send_money_held",
    "transfer_settle_payout",
    "transfer_top_up",
    "transfer_withdraw",
    "transfer_withdraw_held",
)
_WALLET_COLUMNS = "SELECT (id, status, currency, balance) ON wallets"
_CLOSE_GUARD = "transfer_refuse_close_with_pending_withdrawal()"
# Called by the money functions (as the owner); it reads wallet's settings, which transfer's
# role cannot, so the role keeps no EXECUTE of it.
_CAPS = "transfer_caps(text, text, text)"


def _move(from_role: str, to_role: str) -> None:
    for statement in move_privileges_ddl(
        tables=_TABLES, functions=_FUNCTIONS, from_role=from_role, to_role=to_role
    ):
        op.execute(statement)


def upgrade() -> None:
    app_role = context.config.attributes["app_role"]
    _move(context.config.attributes.get("shared_role", app_role), app_role)
    op.execute(f'GRANT {_WALLET_COLUMNS} TO "{app_role}"')
    op.execute(f'REVOKE EXECUTE ON FUNCTION {_CAPS} FROM "{app_role}"')
    op.execute(f"ALTER FUNCTION {_CLOSE_GUARD} SECURITY DEFINER")


def downgrade() -> None:
    app_role = context.config.attributes["app_role"]
    op.execute(f"ALTER FUNCTION {_CLOSE_GUARD} SECURITY INVOKER")
    op.execute(f'REVOKE {_WALLET_COLUMNS} FROM "{app_role}"')
    op.execute(f'GRANT EXECUTE ON FUNCTION {_CAPS} TO "{app_role}"')
    _move(app_role, context.config.attributes.get("shared_role", app_role))
