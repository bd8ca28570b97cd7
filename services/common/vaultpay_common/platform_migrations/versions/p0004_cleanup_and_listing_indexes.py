"""Each producer's outbox cleanup and the audit listing's action filter read an index of their
own.

The cleanup of delivered events (`purge_delivered_outbox_events`) read p0002's `delivered_at`
index, which holds every producer's delivered events: kyc's purge walked past all of
transfer's to find its own. `(producer, delivered_at) WHERE status = 'DELIVERED'` replaces it
(the cleanup was its only reader): a batch is one range of it. The audit listing filtered by
action walked the table newest first until it had a page: `(action, sequence)` holds each
action's rows in the listing's order (vaultpay_common.audit, `sql/action_index.sql`; auth's
own database gets it from auth 0006).

Built (and dropped) CONCURRENTLY, so money movements, relays and audited actions go on writing
both tables while they build: each statement runs in Alembic's autocommit block, after the
revisions before it committed (`run_env` gives each revision a transaction of its own).

Revision ID: p0004
Revises: p0003
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

from vaultpay_common.audit import audit_action_index_ddl, audit_action_index_drop_ddl
from vaultpay_common.migrations import concurrently
from vaultpay_common.outbox import outbox_purge_index_ddl, outbox_purge_index_drop_ddl

revision = "p0004"
down_revision = "p0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with concurrently():
        for statement in (*outbox_purge_index_ddl(), *audit_action_index_ddl()):
            op.execute(statement)


def downgrade() -> None:
    with concurrently():
        for statement in (*audit_action_index_drop_ddl(), *outbox_purge_index_drop_ddl()):
            op.execute(statement)
