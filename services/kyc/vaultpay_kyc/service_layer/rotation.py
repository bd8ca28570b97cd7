"""Rotating the key-encryption key without downtime: AdminRotateKycKey and `rotate-key`.

1. Start (one transaction, idempotent by request_id): a fresh key id becomes the active key,
   the old one starts retiring, a rotation row is recorded with who started it (the staff
   member's user id, or the CLI's `operator:<login>`), audited (with the caller's client
   address, or `via: cli`). From this commit on,
   every new submission wraps its data key under the new key.
2. Sweep (one short transaction per batch): rows still on a retiring key are locked
   (`SKIP LOCKED`: replicas and a concurrent resume share the work, approvals never wait
   long), their data keys unwrapped and wrapped again under the active key. Files and numbers
   are not touched: they are sealed under the data key, which does not change. Readers are
   never blocked: each row flips from the old wrap to the new one atomically.
3. Finish: retiring keys no row uses are dropped (the database's foreign key refuses to drop a
   key a row still names, which settles a race with a submission written just before step 1
   committed), every unfinished rotation is marked finished, audited.

A retry with the same request_id replays step 1 (no second key) and resumes 2-3; so does the
periodic `resume_unfinished` job after a crash, and `vaultpay-kyc rotate-key --resume`.
A row whose data key does not unwrap (tampered) is skipped and reported: its key stays, since
dropping it would make the row unreadable for good.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable

from vaultpay_common.audit import AuditEntry
from vaultpay_common.clock import Clock
from vaultpay_common.context import remaining_seconds
from vaultpay_common.errors import AbortedError, FailedPreconditionError
from vaultpay_common.idempotency import DataclassCodec, run_once
from vaultpay_kyc.domain.crypto import EnvelopeCipher, SubmissionRef, WrappedKey, new_key_id
from vaultpay_kyc.domain.errors import DocumentUnreadableError
from vaultpay_kyc.service_layer.commands import (
    RotateKycKey,
    RotationOutcome,
    RotationProgress,
    RotationStarted,
)
from vaultpay_kyc.service_layer.ports import KeyStillInUseError, KycUnitOfWork, Rotation

__all__ = [
    "AnotherRotationUnfinishedError",
    "KeyRotationIncompleteError",
    "KeyRotationService",
    "ProgressSink",
]

log = logging.getLogger(__name__)

_STARTED = DataclassCodec(RotationStarted)


ProgressSink = Callable[[RotationProgress], None]


class KeyRotationIncompleteError(AbortedError):
    """The new key is active but some rows still wait (locked by long transactions, or the
    deadline came first). Retrying with the same request_id resumes; so does the periodic job."""

    reason = "KYC_KEY_ROTATION_INCOMPLETE"
    default_message = "the key rotation has not finished yet; retry with the same request_id"


class AnotherRotationUnfinishedError(FailedPreconditionError):
    """Asked to start or resume the rotation of a request id none was started with, while
    another rotation is unfinished (an API-started one, whose id is keyed under its staff
    member, or a typo of this one's): nothing is started; `rotate-key --resume` finishes it."""

    reason = "KYC_KEY_ROTATION_UNFINISHED"
    default_message = "another key rotation is unfinished; finish it first"


# What a rotation asked for by a caller with a deadline leaves of it: one more batch and the
# answer (KYC_KEY_ROTATION_INCOMPLETE), not a call cut off mid-batch.
_ANSWER_MARGIN_SECONDS = 2.0


class KeyRotationService:
    def __init__(
        self,
        uow: Callable[[], KycUnitOfWork],
        clock: Clock,
        cipher: EnvelopeCipher,
        *,
        batch_size: int = 500,
        settle_seconds: float = 30.0,
        retry_interval: float = 0.05,
        new_key: Callable[[], str] = new_key_id,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._uow = uow
        self._clock = clock
        self._cipher = cipher
        self._batch = batch_size
        self._settle = settle_seconds
        self._retry_interval = retry_interval
        self._new_key = new_key
        self._sleep = sleep
        self._monotonic = monotonic

    async def rotate(
        self,
        cmd: RotateKycKey,
        progress: ProgressSink | None = None,
        *,
        answer_within: float | None = None,
        refuse_over_unfinished: bool = False,
    ) -> RotationOutcome:
        """Starts a rotation (or replays the start of `cmd.idempotency`'s) and completes it.
        `answer_within`: the time to answer in when the caller sent no deadline (a JSON call
        through the gateway carries none, and the gateway ends it at 15 s).
        `refuse_over_unfinished`: a start (not a replay) is refused while another rotation is
        unfinished (`resume_or_rotate`)."""
        async with self._uow() as uow:
            started = await run_once(
                uow,
                cmd.idempotency,
                _STARTED,
                lambda: self._start(uow, cmd, refuse_over_unfinished=refuse_over_unfinished),
            )
        outcome = await self.complete(started.rotation_id, progress, answer_within=answer_within)
        if not outcome.finished:
            raise KeyRotationIncompleteError(
                f"key {outcome.key_id} is active; rows still wait for re-wrapping. Retry with "
                "the same request_id to resume (a background job resumes it too)"
            )
        return outcome

    async def resume_or_rotate(
        self, cmd: RotateKycKey, progress: ProgressSink | None = None
    ) -> RotationOutcome:
        """The CLI's `--request-id`: completes the rotation started with `cmd.idempotency`, or
        starts one under it, but never while another rotation is unfinished
        (AnotherRotationUnfinishedError, decided under the activation's lock in the start's
        own transaction, which then rolls back and stores nothing): an id meant to resume an
        API-started rotation (keyed under its staff member) or a typo activated a new key and
        re-wrapped every row again (review of 2026-12-05; a first version looked in a
        transaction of its own, so a rotation committed between the look and the start was
        missed)."""
        return await self.rotate(cmd, progress, refuse_over_unfinished=True)

    async def resume_unfinished(
        self, progress: ProgressSink | None = None
    ) -> RotationOutcome | None:
        """Completes the newest unfinished rotation, if any (the periodic job, the CLI)."""
        async with self._uow() as uow:
            rotation = await uow.keys.unfinished_rotation()
        if rotation is None:
            return None
        log.info("resuming a kyc key rotation", extra={"rotation_id": rotation.rotation_id})
        return await self.complete(rotation.rotation_id, progress)

    async def _start(
        self, uow: KycUnitOfWork, cmd: RotateKycKey, *, refuse_over_unfinished: bool = False
    ) -> RotationStarted:
        if refuse_over_unfinished:
            await uow.keys.lock_activation()  # what is read next holds until this commits
            if await uow.keys.unfinished_rotation() is not None:
                raise AnotherRotationUnfinishedError()
        now = self._clock.now()
        new = self._new_key()
        previous = await uow.keys.activate(new, now)
        rotation_id = str(uuid.uuid4())
        now = await uow.keys.add_rotation(Rotation(rotation_id, previous, new, cmd.actor_id, now))
        await uow.audit(
            AuditEntry(
                "kyc.key_rotation_started",
                "kyc_key",
                new,
                {"previous_key_id": previous, "rotation_id": rotation_id, **cmd.origin()},
                actor_id=cmd.actor_id,
                actor_role=cmd.actor_role.name if cmd.actor_role is not None else "",
            )
        )
        log.info("kyc key rotation started", extra={"key_id": new, "previous_key_id": previous})
        return RotationStarted(rotation_id, new, previous, now)

    async def complete(
        self,
        rotation_id: str,
        progress: ProgressSink | None = None,
        *,
        answer_within: float | None = None,
    ) -> RotationOutcome:
        """Sweeps and finishes; returns unfinished after the settle time (or the caller's
        deadline, whichever is first) if rows are still held by others.

        `progress` hears of each state once: the sweep that finds nothing left after the last
        batch (or polls rows still held) repeats the state before it, and a CLI printed
        `re-wrapped 2, 0 left` twice."""
        budget = self._settle
        left = remaining_seconds()
        if left is None:
            left = answer_within
        # The caller's deadline, kept also while batches make progress (a sweep that kept
        # re-wrapping never looked at it: past the gateway's 15 s the call was cut off, 504,
        # where the contract promises KYC_KEY_ROTATION_INCOMPLETE; review of 2026-12-05).
        # The margin leaves a batch and the answer their time.
        hard_stop = math.inf
        if left is not None:
            budget = max(0.0, min(budget, left - 1.0))
            hard_stop = self._monotonic() + max(0.0, left - _ANSWER_MARGIN_SECONDS)
        deadline = self._monotonic() + budget
        rewrapped = 0
        unreadable: set[str] = set()
        reported: RotationProgress | None = None
        while True:
            done, remaining = await self._sweep_batch(rotation_id, unreadable)
            if done:
                # The settle time is how long rows held by others are waited for: it counts
                # from the last batch that moved something, not from the call's start (a
                # sweep longer than it gave up at once on a row held a moment: review of
                # 2026-12-05), and never past the caller's deadline.
                deadline = min(self._monotonic() + budget, hard_stop)
            rewrapped += done
            state = RotationProgress(rewrapped, remaining)
            if progress is not None and state != reported:
                progress(state)
                reported = state
            if done and remaining:  # progress, more to do: on, within the caller's deadline
                if self._monotonic() >= hard_stop:
                    return await self._outcome(rotation_id, finished=False)
                continue
            if remaining == 0:  # the last rows went (or none were left): finish
                outcome = await self._finish(rotation_id, unreadable)
                if outcome is not None:
                    return outcome
            if self._monotonic() >= deadline:
                return await self._outcome(rotation_id, finished=False)
            await self._sleep(self._retry_interval)

    async def _sweep_batch(self, rotation_id: str, unreadable: set[str]) -> tuple[int, int]:
        """(rows re-wrapped, rows left on retiring keys, unreadable ones not counted)."""
        async with self._uow() as uow:
            active = await uow.keys.active_key_id()
            rows = await uow.keys.rows_to_rewrap(self._batch, skip=sorted(unreadable))
            rewrapped: list[tuple[str, WrappedKey]] = []
            for row in rows:
                ref = SubmissionRef(row.submission_id, row.user_id)
                try:
                    rewrapped.append(
                        (row.submission_id, self._cipher.rewrap(ref, row.wrapped_key, active))
                    )
                except DocumentUnreadableError:
                    log.error(
                        "kyc data key does not unwrap; left on its key",
                        extra={
                            "submission_id": row.submission_id,
                            "key_id": row.wrapped_key.key_id,
                        },
                    )
                    unreadable.add(row.submission_id)
            if rewrapped:
                await uow.keys.set_wrapped_keys(rewrapped)
                await uow.keys.add_rewrapped(rotation_id, len(rewrapped))
            remaining = await uow.keys.count_rows_to_rewrap(skip=sorted(unreadable))
            await uow.commit()
        return len(rewrapped), remaining

    async def _finish(self, rotation_id: str, unreadable: set[str]) -> RotationOutcome | None:
        """Drops unused retiring keys; None when a late row still needs a sweep. Keys kept only
        by `unreadable` rows do not keep the rotation open, but a readable row on a retiring
        key does (a rotation started since this one's last count moved the active key on),
        and a rotation started after the key this one swept to is left to finish itself."""
        try:
            async with self._uow() as uow:
                active = await uow.keys.active_key_id()
                dropped = await uow.keys.drop_unused_keys()
                still = await uow.keys.retiring_key_ids()
                if still and (
                    not unreadable or await uow.keys.count_rows_to_rewrap(skip=sorted(unreadable))
                ):
                    await uow.commit()
                    return None
                finished = await uow.keys.finish_rotations(self._clock.now(), through_key=active)
                for rotation in finished:
                    await uow.audit(
                        AuditEntry(
                            "kyc.key_rotated",
                            "kyc_key",
                            rotation.to_key_id,
                            {
                                "previous_key_id": rotation.from_key_id,
                                "rotation_id": rotation.rotation_id,
                                "reencrypted_count": str(rotation.reencrypted_count),
                                "dropped_key_ids": ",".join(dropped),
                                "keys_kept_for_unreadable_rows": ",".join(still),
                            },
                        )
                    )
                await uow.commit()
        except KeyStillInUseError:
            return None
        if still:
            log.error("kyc keys kept: unreadable rows still use them", extra={"keys": still})
        return await self._outcome(rotation_id, finished=True, dropped=tuple(dropped))

    async def _outcome(
        self, rotation_id: str, *, finished: bool, dropped: tuple[str, ...] = ()
    ) -> RotationOutcome:
        async with self._uow() as uow:
            rotation = await uow.keys.get_rotation(rotation_id)
        if rotation is None:
            raise LookupError(f"no key rotation {rotation_id}")
        return RotationOutcome(
            rotation.to_key_id,
            rotation.from_key_id,
            rotation.reencrypted_count,
            finished and rotation.finished,
            dropped,
        )
