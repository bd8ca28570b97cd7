"""One pending submission per user, no longer one pending-or-approved: BASIC may be upgraded.

k0001's `kyc_submissions_one_open` (unique `user_id` where the status is PENDING or VERIFIED)
made an approval at KYC_TIER_BASIC final: the user could never ask for KYC_TIER_FULL (an
identity and address document, kyc_tier.proto). A user approved at BASIC may now submit again,
so a VERIFIED submission and a PENDING one (and later several VERIFIED ones) of one user must
coexist. The race-proof rule left to the database is one PENDING submission per user (two
simultaneous submissions store one); that a FULL grant blocks new submissions is the use
case's check, which no approval can race (an approval needs the pending submission that would
refuse the new one).

The downgrade restores k0001's index, and fails (unique violation) while any user has more
than one pending-or-approved submission: the upgrades would have to go first, which is not a
migration's decision to make.

Revision ID: k0005
Revises: k0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "k0005"
down_revision = "k0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "kyc_submissions_one_pending",
        "kyc_submissions",
        ["user_id"],
        unique=True,
        postgresql_where=sa.text("status = 'PENDING'"),
    )
    op.drop_index("kyc_submissions_one_open", table_name="kyc_submissions")


def downgrade() -> None:
    op.create_index(
        "kyc_submissions_one_open",
        "kyc_submissions",
        ["user_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('PENDING', 'VERIFIED')"),
    )
    op.drop_index("kyc_submissions_one_pending", table_name="kyc_submissions")
