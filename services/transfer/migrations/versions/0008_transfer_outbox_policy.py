"""transfer's role sees and writes only transfer's outbox events.

With each service logging in as a role of its own (w0005, t0007, k0002), transfer's role still
shared the `outbox_events` table with the others: a compromised service could read another's
events (amounts, names) or mark them delivered. Row-level security now lets transfer's role see
and write only the events it produces (`producer = 'transfer'`). The ledger's functions write
transfer's events as the owner, whom the policy does not bind. Where one role serves every
service, the policies add up and nothing changes for it. The downgrade drops the policy (and
row-level security with the last one).

Revision ID: t0008
Revises: t0007
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import context, op

from vaultpay_common.outbox import outbox_producer_policy_ddl, outbox_producer_policy_drop_ddl

revision = "t0008"
down_revision = "t0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in outbox_producer_policy_ddl("transfer", context.config.attributes["app_role"]):
        op.execute(statement)


def downgrade() -> None:
    for statement in outbox_producer_policy_drop_ddl("transfer"):
        op.execute(statement)
