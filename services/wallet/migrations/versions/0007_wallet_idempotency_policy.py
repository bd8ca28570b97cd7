"""wallet's role sees, inserts and deletes only wallet's idempotency records.

With each service logging in as a role of its own, wallet's role still shared the
`idempotency_records` table with the others: a compromised service could read another's stored
answers or delete its records (so that a retry runs again). Row-level security now lets
wallet's role see, insert and delete only the records of its own methods (`service = 'wallet'`,
the column platform p0003 computes from `method`). The PIN-check functions (SECURITY INVOKER)
write wallet's records, its "#reserve" keys included, as wallet's role, so they are bound too.
Where one role serves every service, the policies add up and nothing changes for it. The
downgrade drops the policy (and row-level security with the last one); platform p0003's column
stays.

Revision ID: w0007
Revises: w0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import context, op

from vaultpay_common.idempotency import (
    idempotency_service_policy_ddl,
    idempotency_service_policy_drop_ddl,
)

revision = "w0007"
down_revision = "w0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    role = context.config.attributes["app_role"]
    for statement in idempotency_service_policy_ddl("wallet", role):
        op.execute(statement)


def downgrade() -> None:
    for statement in idempotency_service_policy_drop_ddl("wallet"):
        op.execute(statement)
