"""The review rules over native gRPC on real PostgreSQL: staff decide only the submissions of
users they outrank (the owner's role asked of auth, failing closed while auth is down)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from sqlalchemy import text

from tests.integration.kyc.conftest import KycStack, bearer
from tests.integration.kyc.kyc_support import pan, rid, submit_request
from tests.support import rpc_failure
from vaultpay.kyc.v1 import kyc_pb2
from vaultpay_common.context import Role
from vaultpay_common.db import create_engine

pytestmark = pytest.mark.integration


async def _submitted_by_staff(kyc: KycStack, role: Role) -> tuple[str, Any, str]:
    """A staff member with a wallet, their call metadata, and their pending submission's id."""
    staff_id = kyc.new_wallet_user()
    metadata = bearer(kyc.auth.user_token(staff_id, role))
    reply = await kyc.public.SubmitKyc(submit_request(pan()), metadata=metadata)
    return staff_id, metadata, reply.submission.submission_id


async def _audited(kyc: KycStack, target_id: str) -> list[str]:
    engine = create_engine(kyc.dbs.app_dsn("kyc"), application_name="kyc-test")
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT action FROM audit_events WHERE target_id = :id ORDER BY sequence"),
                {"id": target_id},
            )
            return list(rows.scalars())
    finally:
        await engine.dispose()


async def _status(kyc: KycStack, submission_id: str) -> int:
    _, root = kyc.staff(Role.SUPER_ADMIN)
    reply = await kyc.admin.AdminListKycSubmissions(
        kyc_pb2.AdminListKycSubmissionsRequest(), metadata=root
    )
    (found,) = [s for s in reply.submissions if s.submission_id == submission_id]
    return int(found.status)


async def test_two_moderators_cannot_approve_each_others_submissions(kyc: KycStack) -> None:
    _, first, first_sid = await _submitted_by_staff(kyc, Role.MODERATOR)
    _, second, second_sid = await _submitted_by_staff(kyc, Role.MODERATOR)
    for metadata, sid in ((first, second_sid), (second, first_sid)):
        failure = await rpc_failure(
            kyc.admin.AdminApproveKyc(
                kyc_pb2.AdminApproveKycRequest(request_id=rid(), submission_id=sid),
                metadata=metadata,
            )
        )
        assert (failure.code, failure.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "INSUFFICIENT_PERMISSIONS",
        )
        assert await _status(kyc, sid) == kyc_pb2.KYC_STATUS_PENDING
        assert await _audited(kyc, sid) == ["kyc.submitted"]
    _, admin = kyc.staff(Role.ADMIN)
    approved = await kyc.admin.AdminApproveKyc(
        kyc_pb2.AdminApproveKycRequest(request_id=rid(), submission_id=first_sid), metadata=admin
    )
    assert approved.submission.status == kyc_pb2.KYC_STATUS_VERIFIED


@pytest.mark.parametrize("owner", [Role.ADMIN, Role.SUPER_ADMIN], ids=["admin", "super_admin"])
async def test_a_moderator_neither_decides_nor_opens_an_admins_submission(
    kyc: KycStack, owner: Role
) -> None:
    _, _, sid = await _submitted_by_staff(kyc, owner)
    _, moderator = kyc.staff(Role.MODERATOR)
    calls = [
        kyc.admin.AdminApproveKyc(
            kyc_pb2.AdminApproveKycRequest(request_id=rid(), submission_id=sid), metadata=moderator
        ),
        kyc.admin.AdminRejectKyc(
            kyc_pb2.AdminRejectKycRequest(request_id=rid(), submission_id=sid, reason="no"),
            metadata=moderator,
        ),
        kyc.admin.AdminGetKycSubmission(
            kyc_pb2.AdminGetKycSubmissionRequest(submission_id=sid), metadata=moderator
        ),
    ]
    for call in calls:
        failure = await rpc_failure(call)
        assert (failure.code, failure.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "INSUFFICIENT_PERMISSIONS",
        )
    assert await _status(kyc, sid) == kyc_pb2.KYC_STATUS_PENDING
    assert await _audited(kyc, sid) == ["kyc.submitted"]  # no decision, no view


async def test_a_decision_fails_closed_while_auth_is_down(kyc: KycStack) -> None:
    user_id, user = kyc.user()
    sid = (await kyc.public.SubmitKyc(submit_request(pan()), metadata=user)).submission
    _, root = kyc.staff(Role.SUPER_ADMIN)
    kyc.auth_peer.down = True
    try:
        failure = await rpc_failure(
            kyc.admin.AdminApproveKyc(
                kyc_pb2.AdminApproveKycRequest(request_id=rid(), submission_id=sid.submission_id),
                metadata=root,
            )
        )
    finally:
        kyc.auth_peer.down = False
    assert (failure.code, failure.reason) == (grpc.StatusCode.UNAVAILABLE, "AUTH_UNAVAILABLE")
    assert await _status(kyc, sid.submission_id) == kyc_pb2.KYC_STATUS_PENDING
    assert user_id in kyc.auth_peer.asked
    approved = await kyc.admin.AdminApproveKyc(
        kyc_pb2.AdminApproveKycRequest(request_id=rid(), submission_id=sid.submission_id),
        metadata=root,
    )
    assert approved.submission.status == kyc_pb2.KYC_STATUS_VERIFIED
