"""No role but the owner deletes an idempotency record younger than 24 hours.

"Kept at least 24 h" was the purge's own guard only: each service's policy on
`idempotency_records` (w0007, t0009, k0004) is one policy for every command, so a service's
role could delete a record of its own at any age, and a retry of that call would then run its
effect again (wallet's PIN checks and kyc's calls have no other guard; transfer's movements
have the ledger's request-id guard). One RESTRICTIVE policy `FOR DELETE TO PUBLIC`, `created_at
< now() - interval '24 hours'`, now holds every role to it: restrictive, it grants nothing (a
role still reaches only its own service's rows) and the switch of row-level security, which
counts the services' own policies only, is unchanged; it binds once that switch is on, with
every service's policy. The cleanup deletes only records past its retention (at least 24
hours, 48 by default), so it purges as before. The owner is not bound (no FORCE): the
migrations, transfer's SECURITY DEFINER ledger functions (which never delete a record).

Created once, here, for every role, rather than by each service chain next to its own policy:
the rule is the platform's, the same for every service. The downgrade drops it.

Revision ID: p0005
Revises: p0004
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from vaultpay_common.idempotency.sql import (
    idempotency_retention_policy_ddl,
    idempotency_retention_policy_drop_ddl,
)

revision = "p0005"
down_revision = "p0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in idempotency_retention_policy_ddl():
        op.execute(statement)


def downgrade() -> None:
    for statement in idempotency_retention_policy_drop_ddl():
        op.execute(statement)
