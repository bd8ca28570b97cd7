"""Staff's use cases: the queue and the decrypted view (both audited), approve and reject,
the stats.

Every page of the queue writes an audit row in the same transaction as the read
("kyc.queue_listed": who, under which filters, how many and which submissions were shown;
never a number, masked or not).

Every view of a decrypted submission writes an audit row in the same transaction as the read
("kyc.submission_viewed": who, which submission, whether the file was included, whether the
number was shown in full, how many possible duplicates); the number never goes into it. An
Aadhaar number is shown in full only to an admin or a super_admin, masked as in the queue to a
moderator (`number_shown`, the domain's rule; any other type in full). Both rows are built in
`domain.staff_reads`, as wallet's and auth's staff reads are: the filters set, the viewer and
their client address. A decision locks the row, applies the domain rule (pending only, never
one's own), stores it, audits it (with the reviewer's client address, as the reads) and puts
the events for wallet into the outbox, all in one transaction, so an approval commits even while wallet is down and the tier follows when it is
back.

An approval is refused (KYC_DOCUMENT_IN_USE, nothing written) when the document is already
verified for another user: checked in the decision's transaction under the document's lock
(`verified_for_another_user`), so two approvals of one document for two users cannot both
pass. The duplicates the view lists only inform a reviewer; this is the rule.

Staff decide, and open decrypted, only the submissions of users they outrank (a super_admin
anyone's; `check_reviewer_outranks_owner`). The owner's role is asked of auth before the
transaction opens, as wallet does for its staff changes (`check_staff_rank`), so no row stays
locked while auth answers and a refusal writes nothing; a submission's owner never changes, so
the owner checked is the owner of the row the decision locks. When auth cannot tell, the call
fails closed (AUTH_UNAVAILABLE, nothing decided or shown). One's own submission is refused
(decisions) or shown (the view) without asking auth, and a super_admin's rejection or view asks
auth nothing (they outrank anyone, so no answer could change it). A retry of a decision that
committed gets its stored reply before the rank is checked (`_stored`).

An approval also asks auth whether the owner is still active, whoever approves (a
super_admin too: their rank cannot change the answer), in the same question as the role
(`standing_of`), and refuses a deactivated owner (KYC_OWNER_DEACTIVATED, nothing written, the
submission still pending; a rejection is allowed). Auth deactivates, kyc is not told: a user
deactivated for identity fraud would otherwise be verified, their wallet's tier raised, and the
document's real holder refused it for good (KYC_DOCUMENT_IN_USE). When auth cannot tell, the
approval fails closed (AUTH_UNAVAILABLE), as the rank check does.

The view lists only the duplicates its viewer could open themselves: those of users they
outrank (a super_admin: anyone's), never the viewer's own; the others are only counted. The
owners' roles are asked of auth (one question per owner, at once) for the 10 oldest duplicates
(`DUPLICATES_CHECKED`), before the audited transaction opens; the rest are counted, and so are
those whose owner auth cannot rank (nothing is listed that the rank rule did not allow).

A decision's input is checked before anything is read or asked, every bad field in one
refusal (`InputChecks`): the request_id, the submission id, the tier, the reason or note. A
reason or note goes to the audit row, the outbox and (a reason) the user's notification, so
it may hold no document number of any format (`clean_review_text`), nor, checked in the
decision's transaction, the submission's own number however it is written
(`_refuse_the_number_in`).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Callable
from datetime import datetime
from typing import TypeVar

from vaultpay_common.audit import AuditEntry
from vaultpay_common.clock import Clock
from vaultpay_common.context import Role
from vaultpay_common.errors import UnavailableError, ValidationError
from vaultpay_common.idempotency import IdempotencyKey, run_once, stored_reply
from vaultpay_common.ids import parse_uuid
from vaultpay_common.input_checks import InputChecks
from vaultpay_common.ranks import acts_on_anyone, staff_outranks
from vaultpay_kyc.domain.crypto import DocumentHasher, EnvelopeCipher, Field, SubmissionRef
from vaultpay_kyc.domain.documents import numbers_in
from vaultpay_kyc.domain.errors import (
    DocumentUnreadableError,
    KycDocumentInUseError,
    KycOwnerDeactivatedError,
    KycSubmissionNotFoundError,
)
from vaultpay_kyc.domain.model import (
    MAX_NOTE_LENGTH,
    MAX_REASON_LENGTH,
    QUOTES_A_NUMBER,
    KycTier,
    Submission,
    check_reviewer_outranks_owner,
    clean_review_text,
    tier_to_grant,
)
from vaultpay_kyc.domain.staff_reads import (
    StaffViewer,
    document_unreadable,
    number_shown,
    queue_listed,
    submission_viewed,
)
from vaultpay_kyc.service_layer.commands import (
    ApproveKyc,
    KycStats,
    QueuePage,
    RejectKyc,
    SubmissionDetails,
)
from vaultpay_kyc.service_layer.events import announce_approval, announce_rejection
from vaultpay_kyc.service_layer.ports import (
    KycUnitOfWork,
    QueueCursor,
    QueueFilter,
    SealedDocument,
    UserRoleSource,
    UserStanding,
)
from vaultpay_kyc.service_layer.submissions import SUBMISSION_CODEC

__all__ = ["DUPLICATES_CHECKED", "NO_ROLES", "ReviewService"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# How many of a viewed submission's duplicates (the oldest) have their owner ranked, each owner
# a question to auth; the ones past it are counted, not listed.
DUPLICATES_CHECKED = 10


def _audited_filters(flt: QueueFilter) -> dict[str, str]:
    """The filters of a page of the queue as the audit log keeps them (the ones set)."""
    filters: dict[str, str] = {}
    if flt.status is not None:
        filters["status"] = flt.status.value
    if flt.user_id:
        filters["user_id"] = flt.user_id
    return filters


def _given(value: T | ValidationError) -> T:
    """A value the entrypoint read, or the refusal it met reading it, raised now to be named
    with the request's other bad fields (`InputChecks`)."""
    if isinstance(value, ValidationError):
        raise value
    return value


class _NoRoles:
    """A `UserRoleSource` that can never tell: a service built without one fails its staff
    decisions closed instead of skipping the rank rule."""

    async def role_of(self, user_id: str) -> Role:
        raise UnavailableError("no source of user roles is configured")

    async def standing_of(self, user_id: str) -> UserStanding:
        raise UnavailableError("no source of user roles is configured")


NO_ROLES: UserRoleSource = _NoRoles()


class ReviewService:
    def __init__(
        self,
        uow: Callable[[], KycUnitOfWork],
        clock: Clock,
        cipher: EnvelopeCipher,
        *,
        hasher: DocumentHasher,
        roles: UserRoleSource = NO_ROLES,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._cipher = cipher
        self._hasher = hasher
        self._roles = roles

    # ----- read -------------------------------------------------------------------------

    async def list_queue(
        self, flt: QueueFilter, after: QueueCursor | None, limit: int, *, viewer: StaffViewer
    ) -> QueuePage:
        """A page of the queue; audited in the same transaction as the read, as auth audits
        its staff's listings of users: the filters, the ids shown (each row carries its
        owner and masked number, so the ids say whose data was seen) and the staff member's
        client address, never a number."""
        async with self._uow() as uow:
            rows = await uow.submissions.list_queue(flt, after, limit + 1)
            shown = rows[:limit]
            submissions = [listed.submission for listed in shown]
            continued = after is not None
            await uow.audit(
                queue_listed(viewer, submissions, _audited_filters(flt), continued=continued)
            )
            await uow.commit()
        return QueuePage(shown, len(rows) > limit)

    async def view(self, submission_id: str, *, viewer: StaffViewer) -> SubmissionDetails:
        """Decrypts one submission for the caller (staff); audited in the same transaction,
        with the caller's client address (as auth and wallet audit their staff reads).
        Only a submission its viewer could decide, or their own: the decrypted document is
        there to decide on, and a moderator has no need of an admin's identity number. Its
        duplicates likewise: only those the viewer could open are listed, the others counted
        (`_duplicates_shown`). The number as the viewer's role may see it (`number_shown`: an
        Aadhaar number masked below an admin), the audit row saying whether it was in full."""
        sid = parse_uuid(submission_id, "submission_id")
        owned = await self._check_rank(sid, viewer.actor_id, viewer.actor_role, own_allowed=True)
        listed, hidden = await self._duplicates_shown(owned, viewer)
        unreadable: DocumentUnreadableError | None = None
        async with self._uow() as uow:
            submission = await uow.submissions.get(sid)
            sealed = await uow.submissions.sealed(sid, with_file=True)
            if submission is None or sealed is None:
                raise KycSubmissionNotFoundError()
            ref = SubmissionRef(sid, submission.user_id)
            try:
                dek = self._cipher.unwrap(ref, sealed.wrapped_key)
                number = dek.open(Field.DOCUMENT_NUMBER, sealed.sealed_number).decode()
                file = (
                    dek.open(Field.DOCUMENT_FILE, sealed.sealed_file)
                    if sealed.sealed_file is not None
                    else b""
                )
                # The masking follows the stored `document_type`, a column the ciphertexts'
                # associated data does not cover: an Aadhaar submission relabelled PASSPORT in
                # the database showed a moderator the whole number. The type is checked by the
                # number's keyed hash, as an approval checks it (review of 2026-12-05).
                expected = self._hasher.digest(submission.document_type, number)
                if not hmac.compare_digest(expected, sealed.number_hash):
                    raise DocumentUnreadableError(
                        "the document's recorded type or hash is not its number's:"
                        " nothing was shown"
                    )
            except DocumentUnreadableError as exc:
                unreadable = exc
            else:
                shown = number_shown(viewer.actor_role, submission.document_type, number)
                await uow.audit(
                    submission_viewed(
                        viewer,
                        submission,
                        file_included=bool(file),
                        full_number_shown=shown.full,
                        possible_duplicates=len(listed),
                        hidden_duplicates=hidden,
                    )
                )
                await uow.commit()
                return SubmissionDetails(submission, shown.text, file, listed, hidden)
        assert unreadable is not None  # the readable path returned inside the block
        await self._record_unreadable(submission, sealed.wrapped_key.key_id, unreadable, viewer)
        raise unreadable

    async def _duplicates_shown(
        self, submission: Submission, viewer: StaffViewer
    ) -> tuple[tuple[str, ...], int]:
        """Other users' submissions of `submission`'s document that `viewer` could open
        themselves (the rank rule of the view, `staff_outranks`; never the viewer's own),
        oldest first, and how many others there are (≤ 50 in all, as `duplicates` finds). Only
        the rows of the `DUPLICATES_CHECKED` oldest distinct owners are checked (every owner's
        for a super_admin, who asks auth nothing): their owners are read here, and asked of
        auth (each owner once, at once), outside any transaction; an owner auth cannot rank
        is not listed (counted: this reveals no more, and the view still works)."""
        async with self._uow() as uow:
            sealed = await uow.submissions.sealed(submission.id, with_file=False)
            if sealed is None:
                raise KycSubmissionNotFoundError()
            found = await uow.submissions.duplicates(
                sealed.number_hash, other_than_user=submission.user_id
            )
            owners: dict[str, str] = {}
            distinct: set[str] = set()
            for duplicate_id in found:
                duplicate = await uow.submissions.get(duplicate_id)
                if duplicate is None or duplicate.user_id == viewer.actor_id:
                    continue
                # The first DUPLICATES_CHECKED distinct owners, each with all their rows (one
                # owner resubmitting must not fill the list), every owner for a super_admin
                # (auth is not asked for them).
                if duplicate.user_id not in distinct:
                    if len(distinct) >= DUPLICATES_CHECKED and not acts_on_anyone(
                        viewer.actor_role
                    ):
                        continue
                    distinct.add(duplicate.user_id)
                owners[duplicate_id] = duplicate.user_id
        outranked = await self._outranked(set(owners.values()), viewer.actor_role)
        listed = tuple(d for d, owner in owners.items() if owner in outranked)
        return listed, len(found) - len(listed)

    async def _outranked(self, users: set[str], staff_role: Role) -> set[str]:
        """Those of `users` whom staff with `staff_role` outrank: every one for a super_admin
        (auth not asked), otherwise those auth ranks below them; one auth cannot rank (down,
        the user unknown to it) is left out."""
        if acts_on_anyone(staff_role):
            return users
        asked = sorted(users)
        answers = await asyncio.gather(
            *(self._roles.role_of(user) for user in asked), return_exceptions=True
        )
        outranked: set[str] = set()
        for user, answer in zip(asked, answers, strict=True):
            if isinstance(answer, UnavailableError):
                continue
            if isinstance(answer, BaseException):
                raise answer
            if staff_outranks(staff_role, answer):
                outranked.add(user)
        return outranked

    async def _record_unreadable(
        self,
        submission: Submission,
        key_id: str,
        error: DocumentUnreadableError,
        viewer: StaffViewer,
    ) -> None:
        """Tampering or a misplaced ciphertext is a security event: log it and audit it."""
        log.error(
            "kyc document does not decrypt",
            extra={"submission_id": submission.id, "key_id": key_id, "error": error.message},
        )
        async with self._uow() as uow:
            await uow.audit(document_unreadable(viewer, submission, key_id))
            await uow.commit()

    async def held_tier(self, user_id: str) -> KycTier:
        """The tier the user's approvals granted (the highest): what a tier event delivers,
        whatever its own, so a late older event cannot lower the wallet (deliveries.py)."""
        async with self._uow() as uow:
            return await uow.submissions.held_tier(user_id)

    async def stats(self) -> KycStats:
        async with self._uow() as uow:
            pending = await uow.submissions.pending_count()
        return KycStats(pending, self._clock.now())

    # ----- decide -----------------------------------------------------------------------

    async def _replayed(self, key: IdempotencyKey | ValidationError | None) -> Submission | None:
        """A committed decision's retry replays first, before the input checks (a rule added
        since it committed, such as the number in its text, must not refuse it; the key's
        fingerprint makes it this very request, checked when it committed) and before auth."""
        return None if isinstance(key, ValidationError) else await self._stored(key)

    async def approve(self, cmd: ApproveKyc) -> Submission:
        replay = await self._replayed(cmd.idempotency)
        if replay is not None:
            return replay
        with InputChecks() as checks:  # in AdminApproveKycRequest's field order
            key = checks.take(cmd.idempotency)
            checked_sid = checks.run(lambda: parse_uuid(cmd.submission_id, "submission_id"))
            checked_tier = checks.run(lambda: tier_to_grant(_given(cmd.kyc_tier)))
            checked_note = checks.run(lambda: self._review_text(cmd.note, "note", MAX_NOTE_LENGTH))
        sid, tier, note = checked_sid.value, checked_tier.value, checked_note.value
        try:
            await self._check_rank(sid, cmd.reviewer_id, cmd.reviewer_role, approving=True)
        except (KycOwnerDeactivatedError, UnavailableError):
            # A retry overlapping its first attempt, which committed meanwhile, gets that
            # answer, not a refusal of a decision already made (review of 2026-12-05: a
            # super_admin's retry waited on the first attempt's key before auth was asked).
            replay = await self._stored(key.value)
            if replay is not None:
                return replay
            raise

        unreadable: list[tuple[Submission, str]] = []  # what `_record_unreadable` records

        async def work(uow: KycUnitOfWork) -> Submission:
            submission = await self._load_for_decision(uow, sid)
            held = await uow.submissions.held_tier(submission.user_id)
            decided = submission.approve(cmd.reviewer_id, tier, self._now(), held=held)
            sealed = await uow.submissions.sealed(sid, with_file=False)
            if sealed is None:
                raise KycSubmissionNotFoundError()
            try:
                self._require_hash_of_the_number(submission, sealed)
            except DocumentUnreadableError:
                unreadable.append((submission, sealed.wrapped_key.key_id))
                raise
            self._refuse_the_number_in(note, "note", submission, sealed)
            if await uow.submissions.verified_for_another_user(sid):
                raise KycDocumentInUseError()
            await uow.submissions.update_review(decided)
            await announce_approval(uow.outbox, decided, tier)
            details = {"user_id": decided.user_id, "kyc_tier": tier.value, "ip": cmd.client_ip}
            if note:
                details["note"] = note
            await uow.audit(AuditEntry("kyc.approved", "kyc_submission", sid, details))
            return decided

        try:
            async with self._uow() as uow:
                return await run_once(uow, key.value, SUBMISSION_CODEC, lambda: work(uow))
        except DocumentUnreadableError as exc:
            if unreadable:  # nothing approved; the security event outlives the refusal
                [(submission, key_id)] = unreadable
                viewer = StaffViewer(cmd.reviewer_id, cmd.reviewer_role, cmd.client_ip)
                await self._record_unreadable(submission, key_id, exc, viewer)
            raise

    def _require_hash_of_the_number(self, submission: Submission, sealed: SealedDocument) -> None:
        """The approval's duplicate check (`verified_for_another_user`) compares the stored
        `number_hash`, a column the ciphertexts' associated data does not cover: one edited
        in the database would let a number verified for its owner be approved for another
        user. The number is decrypted and hashed again; a hash that is not the number's is
        tampering (DocumentUnreadableError, audited), and nothing is approved. The other side
        of the check is not covered: the VERIFIED rows' stored hashes and statuses are read
        as stored (binding them would take a keyed MAC over the row, checked on read)."""
        ref = SubmissionRef(submission.id, submission.user_id)
        number = (
            self._cipher.unwrap(ref, sealed.wrapped_key)
            .open(Field.DOCUMENT_NUMBER, sealed.sealed_number)
            .decode()
        )
        expected = self._hasher.digest(submission.document_type, number)
        if not hmac.compare_digest(expected, sealed.number_hash):
            raise DocumentUnreadableError(
                "the document's recorded hash is not its number's: nothing was approved"
            )

    async def reject(self, cmd: RejectKyc) -> Submission:
        replay = await self._replayed(cmd.idempotency)
        if replay is not None:
            return replay
        with InputChecks() as checks:  # in AdminRejectKycRequest's field order
            key = checks.take(cmd.idempotency)
            checked_sid = checks.run(lambda: parse_uuid(cmd.submission_id, "submission_id"))
            checked_reason = checks.run(
                lambda: self._review_text(cmd.reason, "reason", MAX_REASON_LENGTH, required=True)
            )
        sid, reason = checked_sid.value, checked_reason.value
        await self._check_rank(sid, cmd.reviewer_id, cmd.reviewer_role)

        async def work(uow: KycUnitOfWork) -> Submission:
            submission = await self._load_for_decision(uow, sid)
            decided = submission.reject(cmd.reviewer_id, reason, self._now())
            sealed = await uow.submissions.sealed(sid, with_file=False)
            if sealed is None:
                raise KycSubmissionNotFoundError()
            self._refuse_the_number_in(decided.rejection_reason, "reason", submission, sealed)
            await uow.submissions.update_review(decided)
            await announce_rejection(uow.outbox, decided)
            await uow.audit(
                AuditEntry(
                    "kyc.rejected",
                    "kyc_submission",
                    sid,
                    {
                        "user_id": decided.user_id,
                        "reason": decided.rejection_reason,
                        "ip": cmd.client_ip,
                    },
                )
            )
            return decided

        async with self._uow() as uow:
            return await run_once(uow, key.value, SUBMISSION_CODEC, lambda: work(uow))

    def _review_text(
        self, value: str, field: str, max_length: int, *, required: bool = False
    ) -> str:
        return clean_review_text(
            value,
            field=field,
            required=required,
            max_length=max_length,
            current_year=self._now().year,
        )

    def _refuse_the_number_in(
        self, text: str, field: str, submission: Submission, sealed: SealedDocument
    ) -> None:
        """The submission's own number in a reviewer's text, however it is spelled, also run
        into other words (which the check of every format, `clean_review_text`, lets pass so
        as not to read numbers into ordinary sentences), is refused like any number. Compared
        by its keyed hash, so the number is not decrypted for it (a rejection of a document
        that no longer decrypts still works)."""
        document_type = submission.document_type
        for candidate in numbers_in(text, document_type, current_year=self._now().year):
            if hmac.compare_digest(
                self._hasher.digest(document_type, candidate), sealed.number_hash
            ):
                raise ValidationError.single(field, QUOTES_A_NUMBER)

    async def _stored(self, key: IdempotencyKey | None) -> Submission | None:
        """The reply of an earlier decision with `key` that committed, looked up before the
        rank check: a retry gets the first call's reply whatever changed since (the owner's
        role, auth being down), as pending-only is left to the transaction for the same
        reason. Its own short transaction, ended before auth is asked."""
        async with self._uow() as uow:
            return await stored_reply(uow, key, SUBMISSION_CODEC)

    async def _check_rank(
        self,
        sid: str,
        staff_id: str,
        staff_role: Role,
        *,
        own_allowed: bool = False,
        approving: bool = False,
    ) -> Submission:
        """The rules of a review that need no lock, before its transaction opens: not one's
        own (KYC_SELF_REVIEW, decided without auth; allowed for a view), then the owner ranked
        below the reviewer (INSUFFICIENT_PERMISSIONS), not asked of auth for a super_admin's
        rejection or view, as they outrank anyone (`acts_on_anyone`); and for an approval,
        whoever approves, the owner still active (KYC_OWNER_DEACTIVATED, after the rank, so a
        refusal tells nothing of a user the reviewer does not outrank), asked of auth with the
        role. Raises KYC_SUBMISSION_NOT_FOUND, and AUTH_UNAVAILABLE (or UNAVAILABLE) when the
        owner's role or state is needed and cannot be had. Whether the submission is still
        pending is the transaction's check: a replayed decision must reach its stored reply.
        Returns the submission as read."""
        async with self._uow() as uow:
            submission = await uow.submissions.get(sid)
        if submission is None:
            raise KycSubmissionNotFoundError()
        if own_allowed and submission.user_id == staff_id:
            return submission
        submission.check_not_own(staff_id)
        if approving:
            standing = await self._roles.standing_of(submission.user_id)
            check_reviewer_outranks_owner(staff_role, standing.role)
            if not standing.active:
                raise KycOwnerDeactivatedError()
        elif not acts_on_anyone(staff_role):
            owner_role = await self._roles.role_of(submission.user_id)
            check_reviewer_outranks_owner(staff_role, owner_role)
        return submission

    async def _load_for_decision(self, uow: KycUnitOfWork, sid: str) -> Submission:
        submission = await uow.submissions.get(sid, for_update=True)
        if submission is None:
            raise KycSubmissionNotFoundError()
        return submission

    def _now(self) -> datetime:
        return self._clock.now()
