"""The kyc service's own tables (SQLAlchemy Core), created by migration k0001.

- `kyc_keys`: the ids and states of the key-encryption keys (the keys themselves live in
  settings). At most one is ACTIVE; RETIRING ones still wrap some rows. A key is dropped by
  deleting its row, which the foreign key from `kyc_submissions.key_id` refuses while any row
  still names it.
- `kyc_submissions`: one row per submission, its masked number in clear, the number sealed
  under the submission's data key, and that data key wrapped under `key_id`.
- `kyc_documents`: the sealed files, apart, so listing the queue never reads megabytes.
- `kyc_key_rotations`: one row per rotation, for progress, resumption and the audit.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import UUID

from vaultpay_kyc.adapters.metadata import metadata

__all__ = ["kyc_documents", "kyc_key_rotations", "kyc_keys", "kyc_submissions"]

_TS = DateTime(timezone=True)

kyc_keys = Table(
    "kyc_keys",
    metadata,
    Column("key_id", Text, primary_key=True),
    Column("state", Text, nullable=False),
    Column("created_at", _TS, nullable=False),
    Column("retiring_since", _TS),
    CheckConstraint("state IN ('ACTIVE', 'RETIRING')", name="kyc_keys_state_valid"),
    CheckConstraint("key_id ~ '^kek-[0-9a-f]{16}$'", name="kyc_keys_id_format"),
    # A partial index is not a "key" for row locks: flipping the state takes FOR NO KEY
    # UPDATE, which never waits for submissions holding the key FOR KEY SHARE.
    Index(
        "kyc_keys_one_active",
        "state",
        unique=True,
        postgresql_where=text("state = 'ACTIVE'"),
    ),
)

kyc_submissions = Table(
    "kyc_submissions",
    metadata,
    Column("id", UUID(as_uuid=False), primary_key=True),
    Column("user_id", Text, nullable=False),
    Column("document_type", Text, nullable=False),
    Column("masked_number", Text, nullable=False),
    Column("number_hash", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("rejection_reason", Text, nullable=False, server_default=""),
    Column("granted_tier", Text),
    Column("reviewer_id", Text, nullable=False, server_default=""),
    Column("created_at", _TS, nullable=False),
    Column("reviewed_at", _TS),
    Column("file_content_type", Text),
    Column("file_size_bytes", BigInteger),
    Column("key_id", Text, ForeignKey("kyc_keys.key_id", ondelete="RESTRICT"), nullable=False),
    Column("wrapped_key", LargeBinary, nullable=False),
    Column("sealed_number", LargeBinary, nullable=False),
)

kyc_documents = Table(
    "kyc_documents",
    metadata,
    Column(
        "submission_id", UUID(as_uuid=False), ForeignKey("kyc_submissions.id"), primary_key=True
    ),
    Column("sealed_file", LargeBinary, nullable=False),
)

kyc_key_rotations = Table(
    "kyc_key_rotations",
    metadata,
    Column("rotation_id", UUID(as_uuid=False), primary_key=True),
    Column("from_key_id", Text, nullable=False),
    Column("to_key_id", Text, nullable=False),
    Column("started_by", Text, nullable=False),
    Column("started_at", _TS, nullable=False),
    Column("reencrypted_count", BigInteger, nullable=False, server_default=text("0")),
    Column("finished_at", _TS),
)
