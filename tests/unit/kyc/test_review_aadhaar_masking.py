"""The decrypted view shows an Aadhaar number in full only to an admin or a super_admin, masked
as the queue masks it to a moderator (the Aadhaar Act s.29 and UIDAI's rules on masked Aadhaar:
no display of the whole number beyond need), and the view's audit row says which. Before, every
reviewer, moderators included, got the full 12 digits while the queue showed them masked. Every
other type (PAN and the rest) is still shown in full."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest

from tests.unit.kyc.kyc_world import PDF, World, aadhaar
from vaultpay.kyc.v1 import kyc_pb2
from vaultpay_common.context import CLIENT_IP, METHOD, PRINCIPAL, Principal, Role
from vaultpay_common.pagination import PageTokens
from vaultpay_kyc.domain.documents import DocumentType, mask_document_number
from vaultpay_kyc.domain.errors import DocumentUnreadableError
from vaultpay_kyc.domain.model import Submission
from vaultpay_kyc.domain.staff_reads import ShownNumber, number_shown
from vaultpay_kyc.entrypoints.servicers import KycAdminServicer

AADHAAR = aadhaar()  # 234123412346
MASKED = "XXXXXXXX" + AADHAAR[-4:]
PAN = "ABCPE1234F"
_ANY: Any = None


@pytest.mark.parametrize(
    ("role", "shown"),
    [
        (Role.MODERATOR, ShownNumber(MASKED, full=False)),
        (Role.ADMIN, ShownNumber(AADHAAR, full=True)),
        (Role.SUPER_ADMIN, ShownNumber(AADHAAR, full=True)),
        (Role.USER, ShownNumber(MASKED, full=False)),  # never reaches the view; masked anyway
    ],
    ids=["moderator", "admin", "super_admin", "user"],
)
def test_the_rule_an_aadhaar_number_in_full_from_admin_up(role: Role, shown: ShownNumber) -> None:
    assert number_shown(role, DocumentType.AADHAAR, AADHAAR) == shown
    # The queue's masking, not a second one.
    assert number_shown(Role.MODERATOR, DocumentType.AADHAAR, AADHAAR).text == (
        mask_document_number(AADHAAR)
    )


@pytest.mark.parametrize(
    ("document_type", "number"),
    [
        (DocumentType.PAN, PAN),
        (DocumentType.PASSPORT, "K1234567"),
        (DocumentType.DRIVING_LICENCE, "MH1420110062821"),
    ],
    ids=["pan", "passport", "driving_licence"],
)
def test_the_rule_other_types_in_full_to_a_moderator(
    document_type: DocumentType, number: str
) -> None:
    assert number_shown(Role.MODERATOR, document_type, number) == ShownNumber(number, full=True)


async def _aadhaar_of(world: World, user: str = "alice") -> Submission:
    return await world.submit(
        user, AADHAAR, document_type=DocumentType.AADHAAR, file=PDF, content_type="application/pdf"
    )


@pytest.mark.parametrize(
    ("role", "number", "full"),
    [
        (Role.MODERATOR, MASKED, "false"),
        (Role.ADMIN, AADHAAR, "true"),
        (Role.SUPER_ADMIN, AADHAAR, "true"),
    ],
    ids=["moderator", "admin", "super_admin"],
)
async def test_a_view_of_an_aadhaar_shows_the_number_by_role_and_audits_which(
    role: Role, number: str, full: str
) -> None:
    world = World()
    submission = await _aadhaar_of(world)
    details = await world.view(submission.id, "staff", role=role)
    assert details.document_number == number
    assert details.document_file == PDF  # the scan is still returned (not in scope)
    entry = world.uow.audit_entries[-1]
    assert (entry.action, entry.actor_role) == ("kyc.submission_viewed", role.name)
    assert entry.details["full_number_shown"] == full
    assert entry.details["document_type"] == "AADHAAR"
    assert AADHAAR not in str(entry) and MASKED not in str(entry)  # never a number


async def test_the_masked_view_is_the_queues_mask() -> None:
    world = World()
    submission = await _aadhaar_of(world)
    details = await world.view(submission.id, "mod", role=Role.MODERATOR)
    assert details.document_number == details.submission.masked_number == MASKED
    assert AADHAAR not in repr(details)


async def test_a_moderators_view_of_their_own_aadhaar_is_masked_too() -> None:
    world = World()
    world.wallets.users.add("mod-1")
    world.roles.roles["mod-1"] = Role.MODERATOR
    mine = await _aadhaar_of(world, "mod-1")
    details = await world.view(mine.id, "mod-1", role=Role.MODERATOR)
    assert details.document_number == MASKED
    assert world.uow.audit_entries[-1].details["full_number_shown"] == "false"


async def test_a_moderators_view_of_a_pan_is_in_full_as_before() -> None:
    world = World()
    submission = await world.submit("alice", PAN)
    details = await world.view(submission.id, "mod", role=Role.MODERATOR)
    assert details.document_number == PAN
    assert world.uow.audit_entries[-1].details["full_number_shown"] == "true"


@pytest.mark.parametrize(
    ("role", "number", "full"),
    [(Role.MODERATOR, MASKED, "false"), (Role.ADMIN, AADHAAR, "true")],
    ids=["moderator", "admin"],
)
async def test_the_rpc_takes_the_role_from_the_callers_token(
    role: Role, number: str, full: str
) -> None:
    """AdminGetKycSubmission through the servicer, the caller's role from the JWT context."""
    world = World()
    submission = await _aadhaar_of(world)
    servicer = KycAdminServicer(world.review, _ANY, PageTokens(b"k" * 32))
    caller = str(uuid.uuid4())
    principal = PRINCIPAL.set(Principal(caller, role, str(uuid.uuid4())))
    address = CLIENT_IP.set("203.0.113.9")
    method = METHOD.set("/vaultpay.kyc.v1.KycAdminService/AdminGetKycSubmission")
    try:
        reply = await servicer.AdminGetKycSubmission(
            kyc_pb2.AdminGetKycSubmissionRequest(submission_id=submission.id), _ANY
        )
    finally:
        METHOD.reset(method)
        CLIENT_IP.reset(address)
        PRINCIPAL.reset(principal)
    assert reply.document_number == number
    assert reply.submission.masked_document_number == MASKED
    entry = world.uow.audit_entries[-1]
    assert (entry.actor_id, entry.details["full_number_shown"]) == (caller, full)


async def test_an_aadhaar_relabelled_in_the_database_is_not_shown_in_full_to_a_moderator() -> None:
    """Review of 2026-12-05 (helper 291): the masking followed the stored document_type, a
    column the encryption does not authenticate: an Aadhaar submission relabelled PASSPORT by
    whoever can write the table showed a moderator the whole number. The view now checks the
    type against the number's keyed hash, as an approval does, and refuses the document as
    unreadable (audited) on a mismatch."""
    world = World()
    submission = await _aadhaar_of(world)
    repo = world.uow.submissions
    repo.rows[submission.id] = dataclasses.replace(
        repo.rows[submission.id], document_type=DocumentType.PASSPORT
    )
    with pytest.raises(DocumentUnreadableError, match="type or hash"):
        await world.view(submission.id, "mod", role=Role.MODERATOR)
    actions = [entry.action for entry in world.uow.audit_entries]
    assert "kyc.submission_viewed" not in actions
    assert AADHAAR not in str(world.uow.audit_entries)
