"""The session revocation feed: a row per revoked session, written by a trigger on `sessions`
in the revoking transaction, read by AuthInternalService.PollSessionRevocations.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10
"""

from __future__ import annotations

from alembic import context, op

from vaultpay_auth.adapters.revocations import revocation_feed_ddl, revocation_feed_drop_ddl

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for statement in revocation_feed_ddl(context.config.attributes["app_role"]):
        op.execute(statement)


def downgrade() -> None:
    for statement in revocation_feed_drop_ddl():
        op.execute(statement)
