"""kyc's role sees, inserts and deletes only kyc's idempotency records.

With each service logging in as a role of its own, kyc's role still shared the
`idempotency_records` table with the others: a compromised service could read another's stored
answers or delete its records (so that a retry runs again). Row-level security now lets kyc's
role see, insert and delete only the records of its own methods (`service = 'kyc'`, the column
platform p0003 computes from `method`). The key-rotation CLI's records ("cli:vaultpay-
kyc/rotate-key") are kyc's too. Where one role serves every service, the policies add up and
nothing changes for it. The downgrade drops the policy (and row-level security with the last
one); platform p0003's column stays.

Revision ID: k0004
Revises: k0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import context, op

from vaultpay_common.idempotency import (
    idempotency_service_policy_ddl,
    idempotency_service_policy_drop_ddl,
)

revision = "k0004"
down_revision = "k0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    role = context.config.attributes["app_role"]
    for statement in idempotency_service_policy_ddl("kyc", role):
        op.execute(statement)


def downgrade() -> None:
    for statement in idempotency_service_policy_drop_ddl("kyc"):
        op.execute(statement)
