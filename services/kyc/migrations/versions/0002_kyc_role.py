"""kyc's tables granted to kyc's own role.

The services of the shared database used to log in as one role. Now each may have its own
(`<SERVICE>_DATABASE_CHAIN_ROLES` at `migrate`): this revision moves what the kyc chain had
granted to the platform's role (the group every service's role is a member of) to kyc's, so
that wallet and transfer cannot read the encrypted documents or their wrapped keys. Where one
role serves every service, the two roles are one and nothing changes. The downgrade moves the
grants back.

Revision ID: k0002
Revises: k0001
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import context, op

from vaultpay_common.migrations import move_privileges_ddl

revision = "k0002"
down_revision = "k0001"
branch_labels = None
depends_on = None

_TABLES = ("kyc_submissions", "kyc_documents", "kyc_keys", "kyc_key_rotations")


def _move(from_role: str, to_role: str) -> None:
    for statement in move_privileges_ddl(
        tables=_TABLES, functions=(), from_role=from_role, to_role=to_role
    ):
        op.execute(statement)


def upgrade() -> None:
    app_role = context.config.attributes["app_role"]
    _move(context.config.attributes.get("shared_role", app_role), app_role)


def downgrade() -> None:
    app_role = context.config.attributes["app_role"]
    _move(app_role, context.config.attributes.get("shared_role", app_role))
