"""A KYC decision is final in the database, and kyc's role updates only the columns kyc changes.

k0001 granted UPDATE on the whole of `kyc_submissions` and nothing in the database guarded a
submission's progress: kyc's role (a kyc bug, or whoever holds its credentials) could turn a
REJECTED submission into a VERIFIED one at KYC_TIER_FULL, lower or raise a granted tier after
the fact, or move a submission (and its decision) to another user_id; the rules lived only in
`Submission.approve` / `Submission.reject` (review, 2026-12-05).

* Deny by default: the table-level UPDATE is revoked and UPDATE granted on the columns kyc's
  code writes: the decision (`SqlSubmissionRepository.update_review`: status,
  rejection_reason, granted_tier, reviewer_id, reviewed_at) and a key rotation's re-wrap
  (`SqlKeyRepository.set_wrapped_keys`: key_id, wrapped_key). `SELECT ... FOR NO KEY UPDATE`
  needs UPDATE of one column only, so the decisions' and the rotation sweep's row locks hold.
* A BEFORE UPDATE trigger, `kyc_submissions_change_guard` (its function owned by the owner,
  SECURITY INVOKER: it reads OLD and NEW only), binds every role, the owner's included:
  - id, user_id, the document (document_type, masked_number, number_hash, sealed_number,
    file_content_type, file_size_bytes) and created_at never change
    (check_violation on `kyc_submissions_document_fixed`);
  - the decision (status, rejection_reason, granted_tier, reviewer_id, reviewed_at) changes
    once, PENDING -> VERIFIED | REJECTED; a decided submission keeps its decision, and a
    pending one that stays pending has none (check_violation on
    `kyc_submissions_decision_final`). k0001's CHECKs still say what a decision holds.
  - key_id and wrapped_key are free: a rotation re-wraps pending and decided rows alike.
  Nobody may EXECUTE the function but its owner: a trigger fires without it.

The downgrade drops the trigger and its function and gives back the table-level UPDATE
(revoking it drops the column grants too).

Revision ID: k0006
Revises: k0005
Create Date: 2026-12-05
"""

from __future__ import annotations

from alembic import context, op

revision = "k0006"
down_revision = "k0005"
branch_labels = None
depends_on = None

# What SqlSubmissionRepository.update_review and SqlKeyRepository.set_wrapped_keys write;
# keep the three in step.
UPDATABLE_COLUMNS = (
    "status",
    "rejection_reason",
    "granted_tier",
    "reviewer_id",
    "reviewed_at",
    "key_id",
    "wrapped_key",
)

_GUARD = """
CREATE FUNCTION kyc_check_submission_change() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF (NEW.id, NEW.user_id, NEW.document_type, NEW.masked_number, NEW.number_hash,
        NEW.sealed_number, NEW.file_content_type, NEW.file_size_bytes, NEW.created_at)
       IS DISTINCT FROM
       (OLD.id, OLD.user_id, OLD.document_type, OLD.masked_number, OLD.number_hash,
        OLD.sealed_number, OLD.file_content_type, OLD.file_size_bytes, OLD.created_at) THEN
        RAISE EXCEPTION 'KYC submission %: its owner, document and creation time never change',
            OLD.id
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'kyc_submissions_document_fixed',
                  TABLE = TG_TABLE_NAME;
    END IF;
    IF (OLD.status <> 'PENDING' OR NEW.status = 'PENDING')
       AND (NEW.status, NEW.rejection_reason, NEW.granted_tier, NEW.reviewer_id,
            NEW.reviewed_at)
           IS DISTINCT FROM
           (OLD.status, OLD.rejection_reason, OLD.granted_tier, OLD.reviewer_id,
            OLD.reviewed_at) THEN
        RAISE EXCEPTION 'KYC submission % is %: a decision is made once, from PENDING, and is'
            ' final', OLD.id, OLD.status
            USING ERRCODE = 'check_violation',
                  CONSTRAINT = 'kyc_submissions_decision_final',
                  TABLE = TG_TABLE_NAME;
    END IF;
    RETURN NEW;
END
$$
"""
_REVOKE_GUARD = "REVOKE EXECUTE ON FUNCTION kyc_check_submission_change() FROM PUBLIC"
_TRIGGER = """
CREATE TRIGGER kyc_submissions_change_guard
    BEFORE UPDATE ON kyc_submissions
    FOR EACH ROW
    EXECUTE FUNCTION kyc_check_submission_change()
"""


def upgrade() -> None:
    app_role = context.config.attributes["app_role"]
    op.execute(f'REVOKE UPDATE ON kyc_submissions FROM "{app_role}"')
    op.execute(f'GRANT UPDATE ({", ".join(UPDATABLE_COLUMNS)}) ON kyc_submissions TO "{app_role}"')
    op.execute(_GUARD)
    op.execute(_REVOKE_GUARD)
    op.execute(_TRIGGER)


def downgrade() -> None:
    app_role = context.config.attributes["app_role"]
    op.execute("DROP TRIGGER kyc_submissions_change_guard ON kyc_submissions")
    op.execute("DROP FUNCTION kyc_check_submission_change()")
    # A table's REVOKE takes its columns' grants of the same privilege with it.
    op.execute(f'REVOKE UPDATE ON kyc_submissions FROM "{app_role}"')
    op.execute(f'GRANT UPDATE ON kyc_submissions TO "{app_role}"')
