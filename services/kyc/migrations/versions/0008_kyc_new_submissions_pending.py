"""A new KYC submission is PENDING, with no decision: kyc's role cannot insert a decided one.

k0006 made a decision final against UPDATE, but k0001 grants kyc's role INSERT of every column
of `kyc_submissions`, and a BEFORE UPDATE trigger never looks at an INSERT: whoever held kyc's
credentials could insert a row already VERIFIED at KYC_TIER_FULL for any user (k0001's CHECKs
accept a row whose decision is complete), which `held_tier` then reads as a reviewed decision
and every later tier event is raised to (review of 2026-12-05; t0026 closed the same gap on
`wallet_transactions`). kyc's code only ever inserts PENDING rows (`SqlSubmissionRepository.add`).

A BEFORE INSERT trigger, `kyc_submissions_new_pending` (its function owned by the owner,
SECURITY INVOKER, EXECUTE revoked from PUBLIC), refuses, for every role but the table's owner,
a row whose status is not PENDING or that carries any part of a decision (rejection_reason,
granted_tier, reviewer_id, reviewed_at): check_violation on `kyc_submissions_new_pending`. The
owner (the migrations, an operator's restore) may still insert decided rows.

The downgrade drops the trigger and its function.

Revision ID: k0008
Revises: k0007
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import op

from vaultpay_common.migrations import limit_lock_waits

revision = "k0008"
down_revision = "k0007"
branch_labels = None
depends_on = None

_GUARD = """
CREATE FUNCTION kyc_check_new_submission() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- True for the owner (and superusers); kyc's role is no member of the owner.
    IF pg_has_role(current_user,
                   (SELECT c.relowner FROM pg_class AS c WHERE c.oid = TG_RELID), 'USAGE') THEN
        RETURN NEW;
    END IF;
    IF NEW.status IS DISTINCT FROM 'PENDING'
       OR NEW.rejection_reason IS DISTINCT FROM ''
       OR NEW.granted_tier IS NOT NULL
       OR NEW.reviewer_id IS DISTINCT FROM ''
       OR NEW.reviewed_at IS NOT NULL THEN
        RAISE EXCEPTION 'a new KYC submission is PENDING and holds no decision'
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'kyc_submissions_new_pending',
                  TABLE = TG_TABLE_NAME;
    END IF;
    RETURN NEW;
END
$$
"""
_REVOKE_GUARD = "REVOKE EXECUTE ON FUNCTION kyc_check_new_submission() FROM PUBLIC"
_TRIGGER = """
CREATE TRIGGER kyc_submissions_new_pending
    BEFORE INSERT ON kyc_submissions
    FOR EACH ROW
    EXECUTE FUNCTION kyc_check_new_submission()
"""


def upgrade() -> None:
    limit_lock_waits()  # CREATE TRIGGER waits for every open write of kyc_submissions
    op.execute(_GUARD)
    op.execute(_REVOKE_GUARD)
    op.execute(_TRIGGER)


def downgrade() -> None:
    limit_lock_waits()  # as the upgrade: dropping takes the same strong lock
    op.execute("DROP TRIGGER kyc_submissions_new_pending ON kyc_submissions")
    op.execute("DROP FUNCTION kyc_check_new_submission()")
