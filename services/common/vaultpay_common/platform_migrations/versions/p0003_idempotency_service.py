"""Each idempotency record says which service it belongs to.

`service` is computed by PostgreSQL from the record's `method` (the gRPC method names its
package, "/vaultpay.wallet.v1..."; kyc's rotation CLI keys "cli:vaultpay-kyc/..."), so it is
bound to the key and no insert sets it: the services' code and the ledger's and wallet's SQL
functions write records as before. Existing records get theirs as the column is added (the
table is rewritten under its lock: a day of records). The `(service, created_at)` index, which
each service's cleanup reads for its own expired records, replaces the `created_at` one. The
service chains' next revisions (w0007, t0009, k0004) add the row-level security that reads it.
The downgrade restores the `created_at` index and drops the column (after those revisions'
downgrades: a policy that reads the column keeps it).

Revision ID: p0003
Revises: p0002
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

from vaultpay_common.idempotency import idempotency_service_ddl, idempotency_service_drop_ddl

revision = "p0003"
down_revision = "p0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in idempotency_service_ddl():
        op.execute(statement)


def downgrade() -> None:
    for statement in idempotency_service_drop_ddl():
        op.execute(statement)
