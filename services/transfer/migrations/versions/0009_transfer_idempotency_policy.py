"""transfer's role sees, inserts and deletes only transfer's idempotency records.

With each service logging in as a role of its own, transfer's role still shared the
`idempotency_records` table with the others: a compromised service could read another's stored
answers or delete its records (so that a retry runs again). Row-level security now lets
transfer's role see, insert and delete only the records of its own methods (`service =
'transfer'`, the column platform p0003 computes from `method`). transfer's role reads records
to replay them; the ledger's SECURITY DEFINER functions write them as the table's owner, whom
the policy does not bind. Where one role serves every service, the policies add up and nothing
changes for it. The downgrade drops the policy (and row-level security with the last one);
platform p0003's column stays.

Revision ID: t0009
Revises: t0008
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import context, op

from vaultpay_common.idempotency import (
    idempotency_service_policy_ddl,
    idempotency_service_policy_drop_ddl,
)

revision = "t0009"
down_revision = "t0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    role = context.config.attributes["app_role"]
    for statement in idempotency_service_policy_ddl("transfer", role):
        op.execute(statement)


def downgrade() -> None:
    for statement in idempotency_service_policy_drop_ddl("transfer"):
        op.execute(statement)
