"""An approval refuses a document already verified for another user (KYC_DOCUMENT_IN_USE),
writing nothing; the same user's own earlier approval of it, or a pending or rejected one of
another user, do not refuse it."""

from __future__ import annotations

import pytest

from tests.unit.kyc.kyc_world import MOD, World, aadhaar, key
from vaultpay_common.errors import ErrorKind
from vaultpay_kyc.domain.documents import DocumentType
from vaultpay_kyc.domain.errors import KycDocumentInUseError
from vaultpay_kyc.domain.model import KycStatus, KycTier
from vaultpay_kyc.service_layer.commands import RejectKyc


@pytest.fixture
def world() -> World:
    return World()


async def test_a_document_verified_for_another_user_is_not_approved_again(world: World) -> None:
    owner = await world.submit("alice", "ABCPE1234F")
    await world.approve(owner)
    thief = await world.submit("bob", "abcpe-1234-f")  # the same PAN, spelled otherwise
    before = world.snapshot()
    with pytest.raises(KycDocumentInUseError) as err:
        await world.approve(thief)
    assert (err.value.kind, err.value.reason) == (
        ErrorKind.FAILED_PRECONDITION,
        "KYC_DOCUMENT_IN_USE",
    )
    assert "ABCPE1234F" not in err.value.message and "alice" not in err.value.message
    assert world.snapshot() == before  # no decision, event, audit row or idempotency record
    rejected = await world.review.reject(RejectKyc("mod", MOD, thief.id, "not yours", key("mod")))
    assert rejected.status is KycStatus.REJECTED


async def test_a_duplicate_that_is_only_pending_or_rejected_does_not_refuse(world: World) -> None:
    first = await world.submit("alice", "ABCPE1234F")
    second = await world.submit("bob", "ABCPE1234F")
    await world.review.reject(RejectKyc("mod", MOD, first.id, "blurred", key("mod")))
    approved = await world.approve(second)  # alice's is rejected: bob may be the owner
    assert approved.status is KycStatus.VERIFIED
    again = await world.submit("alice", "ABCPE1234F")
    with pytest.raises(KycDocumentInUseError):
        await world.approve(again)  # now bob holds it


async def test_the_same_users_upgrade_with_the_same_document_is_approved(world: World) -> None:
    number = aadhaar()
    basic = await world.submit("alice", number, document_type=DocumentType.AADHAAR)
    await world.approve(basic, tier=KycTier.BASIC)
    upgrade = await world.submit("alice", number, document_type=DocumentType.AADHAAR)
    approved = await world.approve(upgrade, tier=KycTier.FULL)
    assert approved.granted_tier is KycTier.FULL
