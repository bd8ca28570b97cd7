"""A missing tier default fails closed; a credited reference is told early only to its wallet;
a finished payout tells how it finished.

`transfer_caps` folded each window's cap as `coalesce(least(coalesce(admin, default), user),
0)`: PostgreSQL's least() ignores NULLs, so with neither an admin override nor the tier's
default setting, a user's own lower limit became the cap instead of 0, against the function's
own comment ("a missing default fails closed") and wallet's `effective_caps`, which refuses to
compute caps without the default. A window whose base is missing is now 0 whatever the user
set.

`transfer_top_up` (t0019) answered PAYMENT_REFERENCE_USED before the wallet's state, KYC and
limit refusals for a reference credited to any wallet, so a frozen, closed or KYC-NONE wallet
could probe other users' references. The early answer is now given only for a reference
credited to this wallet (the lost-reply retry t0019 exists for: its payment row's credit is
this wallet's); one credited to another wallet is refused by the INSERT ... ON CONFLICT
backstop after the wallet's own refusals, as before t0019.

`transfer_settle_payout` and `transfer_return_payout` answered ALREADY_FINISHED with no reply
whichever way the payout had finished, so the payout worker could not see a bank answer that
contradicts it (paid, for a payout already returned to the wallet, or the reverse). Their
ALREADY_FINISHED now replies the payout's withdrawal row, built as their OK reply is
(`row_to_json` of its `wallet_transactions` row: COMPLETED when the payout was settled, FAILED
when it was returned), read under the payout's row lock; nothing else changes. A transaction
row is what the previous release's adapter parses any reply as, so its workers go on as they
did during a rolling deploy.

SQL in `sql/t0020_upgrade.sql`; the downgrade puts t0002's `transfer_caps` and
`transfer_settle_payout` (read from `sql/functions.sql`), t0019's `transfer_top_up` (read from
`sql/t0019_upgrade.sql`) and t0012's `transfer_return_payout` (read from
`sql/t0012_upgrade.sql`) back. CREATE OR REPLACE: owners and privileges stay.

Revision ID: t0020
Revises: t0019
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

from vaultpay_transfer.adapters.ddl import ledger_t0020_ddl, ledger_t0020_downgrade_ddl

revision = "t0020"
down_revision = "t0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in ledger_t0020_ddl():
        op.execute(statement)


def downgrade() -> None:
    for statement in ledger_t0020_downgrade_ddl():
        op.execute(statement)
