"""A KYC decision is final in the database (k0006), on the real kyc chain at its head with the
in-process kyc server.

* kyc's role may UPDATE only the columns kyc's code writes (a decision, a key rotation's
  re-wrap): a submission's owner, document and creation time are refused to it.
* A decision is made once, PENDING -> VERIFIED | REJECTED: a REJECTED submission never
  becomes VERIFIED (nor for another user), a granted tier never changes, a decided one never
  goes back to PENDING; the guard binds the owner's writes too.
* What kyc's code does still goes through as kyc's role: the approval and the rejection
  (RPCs), and a re-wrap of a decided submission's data key.
* A new submission is PENDING with no decision (k0008): kyc's role cannot insert a decided
  one; the owner (a migration, a restore) can.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from tests.integration.kyc.conftest import KycStack
from tests.integration.kyc.kyc_support import pan, pdf, rid, submit_request
from vaultpay.kyc.v1 import kyc_pb2
from vaultpay.type.v1 import kyc_tier_pb2

pytestmark = pytest.mark.integration

# Set at submission, never changed: each with a value kyc's role must not write.
FIXED = {
    "id": "gen_random_uuid()",
    "user_id": "'someone-else'",
    "document_type": "'PASSPORT'",
    "masked_number": "'XXXXXX0000'",
    "number_hash": "repeat('0', 64)",
    "sealed_number": "'\\x00'::bytea",
    "file_content_type": "'image/png'",
    "file_size_bytes": "1",
    "created_at": "now()",
}
# What a REJECTED submission would be turned into.
TO_VERIFIED_FULL = (
    "status = 'VERIFIED', granted_tier = 'FULL', rejection_reason = '', reviewer_id = 'x'"
)


def _plain(dsn: str) -> str:
    return dsn.replace("postgresql+asyncpg://", "postgresql://")


@pytest.fixture
async def app(kyc: KycStack) -> AsyncIterator[Any]:
    """A connection as kyc's own role."""
    conn = await asyncpg.connect(_plain(kyc.dbs.app_dsn("kyc")))
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def owner(kyc: KycStack) -> AsyncIterator[Any]:
    conn = await asyncpg.connect(_plain(kyc.dbs.vaultpay_owner_dsn))
    try:
        yield conn
    finally:
        await conn.close()


async def _submit(kyc: KycStack) -> str:
    _, user = kyc.user()
    reply = await kyc.public.SubmitKyc(submit_request(pan(), pdf(2_000)), metadata=user)
    return str(reply.submission.submission_id)


async def _rejected(kyc: KycStack) -> str:
    sid = await _submit(kyc)
    await kyc.admin.AdminRejectKyc(
        kyc_pb2.AdminRejectKycRequest(request_id=rid(), submission_id=sid, reason="blurred"),
        metadata=kyc.staff()[1],
    )
    return sid


async def _verified(
    kyc: KycStack, tier: kyc_tier_pb2.KycTier.ValueType = kyc_tier_pb2.KYC_TIER_BASIC
) -> str:
    sid = await _submit(kyc)
    await kyc.admin.AdminApproveKyc(
        kyc_pb2.AdminApproveKycRequest(request_id=rid(), submission_id=sid, kyc_tier=tier),
        metadata=kyc.staff()[1],
    )
    return sid


async def _row(owner: Any, sid: str) -> dict[str, Any]:
    return dict(await owner.fetchrow("SELECT * FROM kyc_submissions WHERE id = $1::uuid", sid))


async def _refused(conn: Any, sql: str, *args: Any) -> str:
    """The constraint name of the guard's refusal of `sql` (check_violation)."""
    with pytest.raises(asyncpg.CheckViolationError) as refused:
        await conn.execute(sql, *args)
    return str(refused.value.constraint_name)


async def test_a_rejected_submission_never_becomes_verified(
    kyc: KycStack, app: Any, owner: Any
) -> None:
    sid = await _rejected(kyc)
    before = await _row(owner, sid)
    assert before["status"] == "REJECTED"
    update = f"UPDATE kyc_submissions SET {TO_VERIFIED_FULL} WHERE id = $1::uuid"
    assert await _refused(app, update, sid) == "kyc_submissions_decision_final"
    # ... nor for another user: that column is not even kyc's role's to write.
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app.execute(
            f"UPDATE kyc_submissions SET {TO_VERIFIED_FULL}, user_id = 'attacker' WHERE id = $1::uuid",
            sid,
        )
    # The owner's write is bound by the guard too.
    assert await _refused(owner, update, sid) == "kyc_submissions_decision_final"
    assert await _row(owner, sid) == before


@pytest.mark.parametrize(
    "change",
    [
        "granted_tier = 'FULL'",
        "status = 'REJECTED', granted_tier = NULL, rejection_reason = 'later'",
        "status = 'PENDING', granted_tier = NULL, reviewed_at = NULL",
        "reviewer_id = 'someone-else'",
        "reviewed_at = reviewed_at + interval '1 day'",
    ],
)
async def test_a_verified_submission_keeps_its_decision(
    kyc: KycStack, app: Any, owner: Any, change: str
) -> None:
    sid = await _verified(kyc)
    before = await _row(owner, sid)
    assert (before["status"], before["granted_tier"]) == ("VERIFIED", "BASIC")
    update = f"UPDATE kyc_submissions SET {change} WHERE id = $1::uuid"
    assert await _refused(app, update, sid) == "kyc_submissions_decision_final"
    assert await _row(owner, sid) == before


async def test_a_pending_submission_is_decided_once_and_holds_no_decision_before(
    kyc: KycStack, app: Any
) -> None:
    sid = await _submit(kyc)
    assert (
        await _refused(
            app, "UPDATE kyc_submissions SET reviewer_id = 'early' WHERE id = $1::uuid", sid
        )
        == "kyc_submissions_decision_final"
    )
    decide = (
        "UPDATE kyc_submissions SET status = 'REJECTED', rejection_reason = $2,"
        " reviewer_id = 'r', reviewed_at = now() WHERE id = $1::uuid"
    )
    assert await app.execute(decide, sid, "first") == "UPDATE 1"
    assert await _refused(app, decide, sid, "second") == "kyc_submissions_decision_final"


@pytest.mark.parametrize("column", sorted(FIXED))
async def test_a_submissions_owner_document_and_time_are_refused_to_kyc(
    kyc: KycStack, app: Any, owner: Any, column: str
) -> None:
    sid = await _submit(kyc)
    before = await _row(owner, sid)
    update = f"UPDATE kyc_submissions SET {column} = {FIXED[column]} WHERE id = $1::uuid"
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await app.execute(update, sid)
    assert await _refused(owner, update, sid) == "kyc_submissions_document_fixed"
    assert await _row(owner, sid) == before


async def test_kyc_re_wraps_a_decided_submissions_data_key(
    kyc: KycStack, app: Any, owner: Any
) -> None:
    """A rotation's write (SqlKeyRepository.set_wrapped_keys: key_id and wrapped_key) goes
    through on decided rows as on pending ones; the rotation itself is test_kyc_storage's."""
    rewrap = "UPDATE kyc_submissions SET key_id = $2, wrapped_key = $3 WHERE id = $1::uuid"
    for sid in (await _rejected(kyc), await _verified(kyc), await _submit(kyc)):
        before = await _row(owner, sid)
        assert await app.execute(rewrap, sid, before["key_id"], b"another wrap") == "UPDATE 1"
        assert (await _row(owner, sid))["wrapped_key"] == b"another wrap"
        await app.execute(rewrap, sid, before["key_id"], before["wrapped_key"])
        assert await _row(owner, sid) == before


async def test_the_decisions_rpcs_still_decide(kyc: KycStack, owner: Any) -> None:
    rejected, verified = await _rejected(kyc), await _verified(kyc, kyc_tier_pb2.KYC_TIER_FULL)
    assert (await _row(owner, rejected))["status"] == "REJECTED"
    row = await _row(owner, verified)
    assert (row["status"], row["granted_tier"]) == ("VERIFIED", "FULL")


async def test_kyc_holds_update_of_the_decision_and_the_re_wrap_only(
    kyc: KycStack, owner: Any
) -> None:
    rows = await owner.fetch(
        "SELECT a.attname, has_column_privilege($1, 'kyc_submissions', a.attname, 'UPDATE')"
        " AS held FROM pg_attribute AS a WHERE a.attrelid = 'kyc_submissions'::regclass"
        " AND a.attnum > 0 AND NOT a.attisdropped",
        kyc.dbs.app_role("kyc"),
    )
    assert {r["attname"] for r in rows if r["held"]} == {
        "status",
        "rejection_reason",
        "granted_tier",
        "reviewer_id",
        "reviewed_at",
        "key_id",
        "wrapped_key",
    }
    assert not await owner.fetchval(
        "SELECT has_table_privilege($1, 'kyc_submissions', 'UPDATE')", kyc.dbs.app_role("kyc")
    )


# A submission of `user_id` with the given decision, written as one row (k0008's subject).
_INSERT = """
INSERT INTO kyc_submissions (id, user_id, document_type, masked_number, number_hash, status,
    granted_tier, rejection_reason, reviewer_id, created_at, reviewed_at, key_id, wrapped_key,
    sealed_number)
SELECT gen_random_uuid(), $1, 'PAN', 'XXXXXX234F', repeat('a', 64), $2, $3, $4, $5, now(),
    $6::timestamptz, key_id, '\\x00'::bytea, '\\x00'::bytea
  FROM kyc_keys WHERE state = 'ACTIVE'
"""
_DECIDED = {
    "verified at FULL": ("VERIFIED", "FULL", "", "someone", "now"),
    "rejected": ("REJECTED", None, "blurred", "someone", "now"),
    "pending with a reviewer": ("PENDING", None, "", "someone", None),
}


def _stamp(value: str | None) -> datetime.datetime | None:
    return None if value is None else datetime.datetime.now(datetime.UTC)


@pytest.mark.parametrize("decision", sorted(_DECIDED))
async def test_kyc_cannot_insert_a_decided_submission(
    kyc: KycStack, app: Any, owner: Any, decision: str
) -> None:
    """Review of 2026-12-05: k0006 guarded UPDATE only, and kyc's role may INSERT every
    column: a row VERIFIED at FULL for any user, which held_tier reads as a reviewed decision."""
    user, (status, tier, reason, reviewer, reviewed) = f"u-{decision}", _DECIDED[decision]
    args = (user, status, tier, reason, reviewer, _stamp(reviewed))
    assert await _refused(app, _INSERT, *args) == "kyc_submissions_new_pending"
    assert (
        await owner.fetchval("SELECT count(*) FROM kyc_submissions WHERE user_id = $1", user) == 0
    )
    assert await owner.execute(_INSERT, *args) == "INSERT 0 1"  # the owner's restore may


async def test_kyc_inserts_a_pending_submission(kyc: KycStack, app: Any) -> None:
    args = ("u-pending", "PENDING", None, "", "", None)
    assert await app.execute(_INSERT, *args) == "INSERT 0 1"
