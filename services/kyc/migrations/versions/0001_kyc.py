"""KYC submissions, sealed documents, key-encryption key ids and rotations.

Grants: the app role reads and writes submissions (never DELETE: a submission is decided, not
removed) and inserts sealed files (never UPDATE or DELETE them: a rotation re-wraps data keys
only). It may delete `kyc_keys` rows, which is how a retired key is dropped; the foreign key
from `kyc_submissions.key_id` refuses that while a row still names the key. The first key is
created here with a fresh random id; its key material is derived from the service's root key
in settings and never stored.

Revision ID: k0001
Revises:
Create Date: 2026-12-09
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects.postgresql import UUID

from vaultpay_common.migrations import refuse_to_drop_rows

revision = "k0001"
down_revision = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    app_role = context.config.attributes["app_role"]
    keys = op.create_table(
        "kyc_keys",
        sa.Column("key_id", sa.Text, primary_key=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("retiring_since", _TS),
        sa.CheckConstraint("state IN ('ACTIVE', 'RETIRING')", name="kyc_keys_state_valid"),
        sa.CheckConstraint("key_id ~ '^kek-[0-9a-f]{16}$'", name="kyc_keys_id_format"),
    )
    op.create_index(
        "kyc_keys_one_active",
        "kyc_keys",
        ["state"],
        unique=True,
        postgresql_where=sa.text("state = 'ACTIVE'"),
    )
    op.bulk_insert(
        keys,
        [
            {
                "key_id": f"kek-{secrets.token_hex(8)}",
                "state": "ACTIVE",
                "created_at": datetime.now(UTC),
                "retiring_since": None,
            }
        ],
    )

    op.create_table(
        "kyc_submissions",
        sa.Column("id", UUID(as_uuid=False), primary_key=True),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("document_type", sa.Text, nullable=False),
        sa.Column("masked_number", sa.Text, nullable=False),
        sa.Column("number_hash", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("rejection_reason", sa.Text, nullable=False, server_default=""),
        sa.Column("granted_tier", sa.Text),
        sa.Column("reviewer_id", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("reviewed_at", _TS),
        sa.Column("file_content_type", sa.Text),
        sa.Column("file_size_bytes", sa.BigInteger),
        sa.Column(
            "key_id",
            sa.Text,
            sa.ForeignKey("kyc_keys.key_id", ondelete="RESTRICT"),
            nullable=False,
        ),
        sa.Column("wrapped_key", sa.LargeBinary, nullable=False),
        sa.Column("sealed_number", sa.LargeBinary, nullable=False),
        sa.CheckConstraint(
            "document_type IN ('PAN', 'AADHAAR', 'PASSPORT', 'DRIVING_LICENCE')",
            name="kyc_submissions_document_type_valid",
        ),
        sa.CheckConstraint(
            "status IN ('PENDING', 'VERIFIED', 'REJECTED')", name="kyc_submissions_status_valid"
        ),
        sa.CheckConstraint(
            "(status = 'PENDING') = (reviewed_at IS NULL)",
            name="kyc_submissions_reviewed_iff_decided",
        ),
        sa.CheckConstraint(
            "(status = 'VERIFIED') = (granted_tier IS NOT NULL)"
            " AND coalesce(granted_tier IN ('BASIC', 'FULL'), true)",
            name="kyc_submissions_tier_iff_verified",
        ),
        sa.CheckConstraint(
            "(status = 'REJECTED') = (rejection_reason <> '')",
            name="kyc_submissions_reason_iff_rejected",
        ),
        sa.CheckConstraint(
            "(file_content_type IS NULL) = (file_size_bytes IS NULL)"
            " AND coalesce(file_size_bytes > 0, true)",
            name="kyc_submissions_file_described",
        ),
        sa.CheckConstraint("number_hash ~ '^[0-9a-f]{64}$'", name="kyc_submissions_hash_format"),
        sa.CheckConstraint("masked_number ~ '^X*[A-Z0-9]{0,4}$'", name="kyc_submissions_masked"),
    )
    # One open (pending or approved) submission per user: the race-proof rule.
    op.create_index(
        "kyc_submissions_one_open",
        "kyc_submissions",
        ["user_id"],
        unique=True,
        postgresql_where=sa.text("status IN ('PENDING', 'VERIFIED')"),
    )
    op.create_index(
        "kyc_submissions_queue_idx",
        "kyc_submissions",
        ["created_at", "id"],
        postgresql_where=sa.text("status = 'PENDING'"),
    )
    op.create_index(
        "kyc_submissions_reviewed_idx",
        "kyc_submissions",
        ["reviewed_at", "id"],
        postgresql_where=sa.text("status <> 'PENDING'"),
    )
    op.create_index("kyc_submissions_user_idx", "kyc_submissions", ["user_id", "created_at"])
    op.create_index("kyc_submissions_hash_idx", "kyc_submissions", ["number_hash"])
    op.create_index("kyc_submissions_key_idx", "kyc_submissions", ["key_id"])

    op.create_table(
        "kyc_documents",
        sa.Column(
            "submission_id",
            UUID(as_uuid=False),
            sa.ForeignKey("kyc_submissions.id"),
            primary_key=True,
        ),
        sa.Column("sealed_file", sa.LargeBinary, nullable=False),
    )
    # Ciphertext does not compress: store it out of line without trying.
    op.execute("ALTER TABLE kyc_documents ALTER COLUMN sealed_file SET STORAGE EXTERNAL")

    op.create_table(
        "kyc_key_rotations",
        sa.Column("rotation_id", UUID(as_uuid=False), primary_key=True),
        sa.Column("from_key_id", sa.Text, nullable=False),
        sa.Column("to_key_id", sa.Text, nullable=False),
        sa.Column("started_by", sa.Text, nullable=False),
        sa.Column("started_at", _TS, nullable=False),
        sa.Column("reencrypted_count", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("finished_at", _TS),
    )
    op.create_index(
        "kyc_key_rotations_unfinished_idx",
        "kyc_key_rotations",
        ["started_at"],
        postgresql_where=sa.text("finished_at IS NULL"),
    )

    op.execute(f'GRANT USAGE ON SCHEMA public TO "{app_role}"')
    op.execute(f'GRANT SELECT, INSERT, UPDATE ON kyc_submissions TO "{app_role}"')
    op.execute(f'GRANT SELECT, INSERT ON kyc_documents TO "{app_role}"')
    op.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON kyc_keys TO "{app_role}"')
    op.execute(f'GRANT SELECT, INSERT, UPDATE ON kyc_key_rotations TO "{app_role}"')


def downgrade() -> None:
    refuse_to_drop_rows("kyc_submissions", "kyc_documents", "kyc_key_rotations")
    for table in ("kyc_key_rotations", "kyc_documents", "kyc_submissions", "kyc_keys"):
        op.drop_table(table)
